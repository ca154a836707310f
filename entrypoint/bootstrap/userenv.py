"""The user's Python: where the repo's requirements go, and what the job, SSH sessions and Jupyter kernels run.

podvisor's own venv comes first on the image's PATH; installing a repo's requirements there could break
podvisor's pins, and the login user cannot write to it. So requirements go to a venv on the volume (it sees
the image's site-packages, so torch from the base is not reinstalled), or, if the user chose it, the image's
system interpreter. The venv is the login user's: pip runs as that user, who can add packages later.
"""
from __future__ import annotations

import hashlib
import json
import os
import pwd
import shlex
import shutil
import sys
from pathlib import Path

from entrypoint.bootstrap.hooks import run_prefixed
from entrypoint.login_user import become
from entrypoint.trust import unsafe_for_root
from entrypoint.bootstrap.settings import BootstrapSettings
from entrypoint.files import write_atomically

KERNEL_NAME = "workspace-venv"


def system_python() -> str:
    """The image's python3: the first on PATH that is not podvisor's own and that every user may run (an
    interpreter under /root, such as pyenv's, is not the login user's to use)."""
    own = Path(sys.executable).parent
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not folder or Path(folder) == own:
            continue
        for name in ("python3", "python"):
            found = shutil.which(name, path=folder)
            if found and _open_to_all(Path(found).resolve()):
                return found
    return "/usr/bin/python3"


def _open_to_all(path: Path) -> bool:
    return bool(path.stat().st_mode & 0o001) and all(p.stat().st_mode & 0o001 for p in path.parents)


def environment(settings: BootstrapSettings | None, base_path: str | None = None) -> dict[str, str]:
    """PATH and VIRTUAL_ENV for the job and login shells: the user's venv first, once it exists."""
    if settings is None or settings.requirements_target != "venv":
        return {}
    if not (settings.user_venv / "bin" / "python").exists():
        return {}
    path = base_path if base_path is not None else os.environ.get("PATH", "")
    return {"VIRTUAL_ENV": str(settings.user_venv), "PATH": f"{settings.user_venv / 'bin'}{os.pathsep}{path}"}


def shell_lines(settings: BootstrapSettings | None) -> str:
    """For login shells: the venv first on PATH once the bootstrap has made it (the shell checks at login)."""
    if settings is None or settings.requirements_target != "venv":
        return ""
    venv = shlex.quote(str(settings.user_venv))
    return (f"# The user's venv (USER_VENV), where the repo's requirements go.\n"
            f"[ -x {venv}/bin/python ] && export VIRTUAL_ENV={venv} PATH={venv}/bin:\"$PATH\"\n")


def _python(settings: BootstrapSettings, user: str) -> tuple[str, list[str]]:
    """(the interpreter requirements go to, the prefix that runs commands as its owner); makes the venv."""
    if settings.requirements_target == "system":
        # pip runs setup code as root here: the file must be root's alone, or the login user has a way to root.
        shared = os.geteuid() == 0 and user != "root"
        reason = unsafe_for_root(settings.repo_dir / "requirements.txt") if shared else None
        if reason:
            raise RuntimeError(f"REQUIREMENTS_TARGET=system installs as root, and {reason}: not installed; use "
                               "REQUIREMENTS_TARGET=venv (the login user's venv), or bake the packages into the image")
        return system_python(), []
    venv = settings.user_venv
    if not (venv / "bin" / "python").exists():
        venv.parent.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            entry = pwd.getpwnam(user)
            venv.mkdir(exist_ok=True)
            os.chown(venv, entry.pw_uid, entry.pw_gid)
        code = run_prefixed([*become(user), system_python(), "-m", "venv", "--system-site-packages", str(venv)], "venv")
        if code != 0:
            raise RuntimeError(f"could not create the venv {venv} (exit {code}); see the [venv] lines above")
    return str(venv / "bin" / "python"), become(user)


def install_requirements(requirements: Path, stamp: Path, settings: BootstrapSettings, user: str) -> str:
    """pip install -r into the user's Python when the file changed since the last successful install, with
    pip's own progress lines in the log; then make that Python a Jupyter kernel."""
    digest = hashlib.sha256(requirements.read_bytes() + settings.requirements_target.encode()).hexdigest()
    python, runas = _python(settings, user)
    if stamp.exists() and stamp.read_text().strip() == digest:
        return f"requirements unchanged; nothing to install into {python}"
    code = run_prefixed([*runas, python, "-m", "pip", "install", "--progress-bar", "off", "-r", str(requirements)],
                        "pip", cwd=requirements.parent)
    if code != 0:
        raise RuntimeError(f"pip install -r {requirements} failed (exit {code}); see the [pip] lines above")
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest)
    if settings.requirements_target == "venv":
        kernel(settings, user, runas)
    return f"installed {requirements} into {python}"


def kernel(settings: BootstrapSettings, user: str, runas: list[str]) -> None:
    """A Jupyter kernel on the user's venv, so notebooks import what the requirements installed."""
    python = settings.user_venv / "bin" / "python"
    if run_prefixed([*runas, str(python), "-c", "import ipykernel"], "pip") != 0:
        if run_prefixed([*runas, str(python), "-m", "pip", "install", "--progress-bar", "off", "ipykernel"], "pip"):
            raise RuntimeError("could not install ipykernel into the venv: notebooks will not see its packages")
    home = Path(pwd.getpwnam(user).pw_dir) if os.geteuid() == 0 else Path.home()
    folder = home / ".local" / "share" / "jupyter" / "kernels" / KERNEL_NAME
    spec = {"argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python ({settings.user_venv})", "language": "python"}
    run_prefixed([*runas, "mkdir", "-p", str(folder)], "venv")  # as the user: no root-owned folders in their home
    write_atomically(folder / "kernel.json", json.dumps(spec, indent=1), owner=user)  # no link followed
