"""A token podvisor makes when the user set none (Jupyter's, the API's): random, kept on the volume so a
restart keeps it, readable by the login user and root only, and never printed: status says where it is."""
from __future__ import annotations

import os
import pwd
import secrets
from pathlib import Path


def ensure(path: Path, owner: pwd.struct_passwd) -> str:
    """The token in `path`, made first when there is none."""
    token = read(path)
    if token:
        return token
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(24) + "\n")
    if os.geteuid() == 0:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    return path.read_text().strip()


def read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
