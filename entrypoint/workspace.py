"""The persistent volume every default path hangs from: /workspace, or wherever PODVISOR_WORKSPACE, WORKSPACE or
DATA_DIRECTORY (Vast's name) put it. Moving the workspace moves the state dir, the repo, the venv, the datasets,
the checkpoints, the models and Jupyter's root with it, unless one of them is set on its own.

A leaf: the schema's defaults and `podvisor status --live` (which loads no schema) ask it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

NAMES = ("PODVISOR_WORKSPACE", "WORKSPACE", "DATA_DIRECTORY")
"""The variables that name the workspace, the first set (and not empty) winning."""
DEFAULT = Path("/workspace")
STATE_DIR_NAME = ".podvisor"
SYSTEM_DIRS = tuple(Path(p) for p in ("/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc",
                                      "/root", "/run", "/sbin", "/sys", "/usr", "/var", "/home", "/opt", "/tmp"))
"""Folders podvisor must never take over: the workspace and state dir are handed to the login user."""


def is_system_dir(path: Path) -> bool:
    """The folder is one of the system's own, or inside one that belongs to the system alone."""
    path = Path(os.path.normpath(path))
    return path in SYSTEM_DIRS or any(path.is_relative_to(p) for p in SYSTEM_DIRS if str(p) in
                                      ("/bin", "/boot", "/dev", "/etc", "/lib", "/proc", "/sbin", "/sys", "/usr"))


def workspace() -> Path:
    """The workspace the environment names, else /workspace. A value the schema refuses (relative, a system
    folder) is refused there, by its own name: the paths that follow it keep their default rather than fail too."""
    lowered = {key.lower(): value for key, value in os.environ.items()}
    for name in NAMES:
        value = os.environ.get(name, lowered.get(name.lower(), "")).strip()
        if value:
            return Path(value) if value.startswith("/") and not is_system_dir(Path(value)) else DEFAULT
    return DEFAULT


def under(relative: str, many: bool = False) -> dict[str, Any]:
    """Field settings for a path under the workspace: its default follows the workspace, and the docs say so."""
    def factory() -> Path | list[Path]:
        path = workspace() / relative
        return [path] if many else path

    text = f"<workspace>/{relative}" if relative else "<workspace>"
    return {"default_factory": factory, "json_schema_extra": {"default_text": text}}


def default_state_dir() -> Path:
    """On the volume, unless podvisor runs as a normal user who may not write there (a bare GPU host): then
    that user's own state folder, so `podvisor start` works without root. A workspace not made yet counts as
    writable when the user may make it (its nearest existing folder is theirs to write)."""
    volume = workspace()
    nearest = next((p for p in [volume, *volume.parents] if p.exists()), Path("/"))
    if os.geteuid() == 0 or os.access(nearest, os.W_OK):
        return volume / STATE_DIR_NAME
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "podvisor"


def state_dir() -> Path:
    """The state dir the environment names (PODVISOR_STATE_DIR), else the default."""
    return Path(os.environ.get("PODVISOR_STATE_DIR", "").strip() or default_state_dir())
