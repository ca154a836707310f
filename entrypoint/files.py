"""State files other processes read while they change: written whole or not at all."""
from __future__ import annotations

import os
import pwd
import tempfile
from pathlib import Path


def write_atomically(path: Path, text: str, mode: int = 0o644, owner: str | None = None,
                     group: int | None = None) -> None:
    """`text` into `path` through a temporary beside it and a rename: a reader never sees half a file. The
    temporary has `mode` before a byte is written (a file of secrets is never readable by others, not even
    for a moment), belongs to `owner` (and `group`) when root writes it, and has a fresh random name, opened
    exclusively: root writing into a folder the login user can write follows no link planted there, and a
    rename replaces a link at `path` instead of writing through it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), mode)  # neither the umask nor mkstemp's 0600 decides
            if os.geteuid() == 0 and (owner is not None or group is not None):
                entry = pwd.getpwnam(owner) if owner is not None else None
                os.fchown(fh.fileno(), entry.pw_uid if entry else -1,
                          group if group is not None else entry.pw_gid if entry else -1)
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
