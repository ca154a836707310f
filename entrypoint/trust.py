"""Whether root may execute or source a file: only when no other user can change it, on its whole path.

The workspace (and all on it: on_start.sh, the repo, a PROVISIONING_SCRIPT path) belongs to the login user, so a
script there that root ran would be a way to root, and to the control secrets, for anyone with a login shell or a
Jupyter token. A leaf: the bootstrap, the session files and the requirements install all ask it.
"""
from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path


def _who(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _why_not(part: Path, info: os.stat_result, last: bool) -> str | None:
    if info.st_uid != 0:
        return f"{part} belongs to {_who(info.st_uid)}"
    if info.st_mode & 0o020 and info.st_gid != 0:
        return f"{part} is writable by its group (gid {info.st_gid})"
    # A sticky folder (/tmp) lets no one rename or remove what root owns in it.
    if info.st_mode & 0o002 and (last or not (stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX)):
        return f"{part} is writable by everyone"
    return None


def unsafe_for_root(path: Path) -> str | None:
    """Why root must not run or source `path` (who else could change it, or a folder above it), else None.
    Both the path as given and where its links lead are checked: a link is only as safe as its target."""
    given = Path(os.path.abspath(path))
    for chain in (given, Path(os.path.realpath(given))):
        for index, part in enumerate([chain, *chain.parents]):
            try:
                info = os.lstat(part) if part.is_symlink() else os.stat(part)
            except OSError as exc:
                return f"{part} cannot be checked ({exc.strerror})"
            reason = _why_not(part, info, last=index == 0)
            if reason:
                return reason
    return None
