"""State files other processes read while they change: written whole or not at all."""
from __future__ import annotations

import os
import pwd
from pathlib import Path


def write_atomically(path: Path, text: str, mode: int = 0o644, owner: str | None = None) -> None:
    """`text` into `path` through a temporary beside it and a rename: a reader never sees half a file. The
    temporary has `mode` before a byte is written (a file of secrets is never readable by others, not even
    for a moment), and belongs to `owner` when root writes it for a login user."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), mode)  # neither the umask nor an older temporary's mode decides
        fh.write(text)
    if owner is not None and os.geteuid() == 0:
        entry = pwd.getpwnam(owner)
        os.chown(tmp, entry.pw_uid, entry.pw_gid)
    os.replace(tmp, path)
