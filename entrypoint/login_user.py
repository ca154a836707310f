"""The login user that SSH, Jupyter and the job run as.

Images built on CUDA bases only have root; users expect a normal account with sudo, like RunPod's images.
When podvisor does not run as root (a local `make run`), it cannot switch users, so the login user is simply
whoever runs it.
"""
from __future__ import annotations

import getpass
import logging
import os
import pwd
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from entrypoint.workspace import is_system_dir

if TYPE_CHECKING:  # a type only: the context imports the catalog, which reads the bootstrap's settings
    from entrypoint.context import PodContext

log = logging.getLogger("podvisor")


def name(ctx: PodContext) -> str:
    return ctx.core.ssh_user if os.geteuid() == 0 else getpass.getuser()


def home(ctx: PodContext) -> Path:
    return Path(pwd.getpwnam(name(ctx)).pw_dir)


def ensure(ctx: PodContext) -> None:
    """Create the login user when missing, unlock it without a password, and grant sudo unless refused."""
    if os.geteuid() != 0:
        log.info("not root: SSH, Jupyter and the job run as %s", getpass.getuser())
        return
    core = ctx.core
    user = core.ssh_user
    try:
        pwd.getpwnam(user)
    except KeyError:
        cmd = ["useradd", "--create-home", "--shell", "/bin/bash"]
        if core.ssh_gid is not None:
            group = _ensure_group(user, core.ssh_gid)
            cmd += ["--gid", group]
        else:
            cmd += ["--user-group"]
        if core.ssh_uid is not None:
            cmd += ["--uid", str(core.ssh_uid)]
        subprocess.run([*cmd, user], check=True, capture_output=True, text=True)
        log.info("created login user %s", user)
    # "*" means no password can match, yet the account is not locked ("!"), which sshd would refuse.
    subprocess.run(["usermod", "-p", "*", user], check=True, capture_output=True)
    sudoers = Path("/etc/sudoers.d/podvisor")
    if core.ssh_sudo and shutil.which("sudo") and sudoers.parent.is_dir():
        sudoers.write_text(f"{user} ALL=(ALL) NOPASSWD:ALL\n")
        sudoers.chmod(0o440)
    elif sudoers.exists():
        sudoers.unlink()
    if core.podvisor_workspace.is_dir() and core.podvisor_workspace.stat().st_uid == 0:
        own_dir(ctx, core.podvisor_workspace)


def _ensure_group(user: str, gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        subprocess.run(["groupadd", "--gid", str(gid), user], check=True, capture_output=True)
        return user


def own_dir(ctx: PodContext, path: Path) -> Path:
    """Make `path` (and missing parents) a folder the login user can write in: SSH sessions, Jupyter and the
    job run as that user and write checkpoints and notebooks there. Only folders podvisor creates, and a
    root-owned top folder, change owner; nothing is re-owned recursively."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return path
    user = pwd.getpwnam(name(ctx))
    for folder in [*missing, path]:
        if folder.stat().st_uid == 0 and not is_system_dir(folder):
            os.chown(folder, user.pw_uid, user.pw_gid)
    return path


def become(user: str) -> list[str]:
    """The command prefix that runs what follows as `user` (with that user's HOME and USER) when podvisor is
    root; nothing otherwise. setpriv execs: the command keeps its pid, its output and its exit code."""
    if os.geteuid() != 0 or user == "root":
        return []
    entry = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--",
            "env", f"HOME={entry.pw_dir}", f"USER={user}", f"LOGNAME={user}"]

