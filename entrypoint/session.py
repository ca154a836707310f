"""The login user's shells (SSH sessions, Jupyter terminals, `sudo`): the container's environment, and a
`podvisor` command that works in them.

sshd does not pass the container's environment on, so a session would otherwise lack HF_TOKEN, PATH additions
and the provider's variables. It is written to a file only the login user (and root) can read, sourced by login
shells (profile.d) and, for `ssh host command`, from the top of the user's ~/.bashrc: bash run by sshd reads
~/.bashrc, whose interactive-only guard would otherwise skip it (RunPod's images do the same).

`sudo` resets the environment and PATH (`env_reset`, `secure_path`), so `sudo podvisor status` would neither
find podvisor nor its state dir: a small `podvisor` in /usr/local/bin (on sudo's secure_path) reads the same
file and runs podvisor's own interpreter.
"""
from __future__ import annotations

import os
import pwd
import shlex
import sys
from pathlib import Path

from entrypoint.context import PodContext
from entrypoint.files import write_atomically

SESSION_SPECIFIC = {"HOME", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "SHLVL", "TERM", "_", "MAIL", "HOSTNAME",
                    "SUDO_USER", "SUDO_UID", "SUDO_GID", "SUDO_COMMAND", "PODVISOR_SERVICE", "SUPERVISOR_ENABLED",
                    "SUPERVISOR_SERVER_URL", "SUPERVISOR_PROCESS_NAME", "SUPERVISOR_GROUP_NAME", "BASH_ENV"}
PROFILE_SNIPPET = Path("/etc/profile.d/podvisor.sh")
COMMAND = Path("/usr/local/bin/podvisor")
MARK = "# podvisor-environment"


def render(environ: dict[str, str], tail: str = "") -> str:
    lines = ["# The container's environment, written by podvisor at boot for login shells."]
    lines += [f"export {key}={shlex.quote(val)}" for key, val in sorted(environ.items())
              if key not in SESSION_SPECIFIC and key.isidentifier()]
    return "\n".join(lines) + "\n" + tail


def write(path: Path, user: str, environ: dict[str, str], tail: str = "") -> None:
    """Write the file atomically, readable by `user` and root only: it holds the user's tokens (never the
    control credentials: `environ` comes from `PodContext.environment_for`). As root, root's (0640, the login
    user's group): root's shells source it, so the login user may read it but never change it."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    if os.geteuid() == 0:
        write_atomically(path, render(environ, tail), mode=0o640, owner="root", group=pwd.getpwnam(user).pw_gid)
    else:
        write_atomically(path, render(environ, tail), mode=0o600)


def source_line(path: Path) -> str:
    return f"[ -r {shlex.quote(str(path))} ] && . {shlex.quote(str(path))}  {MARK}"


def prepend_once(bashrc: Path, line: str) -> None:
    """Put `line` first in `bashrc`, replacing an earlier podvisor line (the state dir may have moved). The file
    is the home's owner's, and so is what replaces it: a link planted there is neither read nor written through
    by root (it is left as it is)."""
    try:
        fd = os.open(bashrc, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        old: list[str] = []
    except OSError:  # a link (ELOOP) or something else that is no plain file of its owner's
        return
    else:
        with os.fdopen(fd) as fh:
            old = fh.read().splitlines()
    kept = [existing for existing in old if not existing.endswith(MARK)]
    owner = pwd.getpwuid(bashrc.parent.stat().st_uid).pw_name if os.geteuid() == 0 else None
    write_atomically(bashrc, "\n".join([line, *kept]) + "\n", owner=owner)


def command_script(env_file: Path, program: Path) -> str:
    quoted = shlex.quote(str(env_file))
    return (f"#!/bin/sh\n# podvisor for login shells and sudo: the container's environment, then podvisor.\n"
            f"[ -r {quoted} ] && . {quoted}\nexec {shlex.quote(str(program))} \"$@\"\n")


STANDARD_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def reachable(folder: str, uid: int, gids: set[int]) -> bool:
    """`uid` (with groups `gids`) may search `folder` and every folder above it."""
    for part in [Path(folder), *Path(folder).parents]:
        try:
            info = part.stat()
        except OSError:
            return False
        bit = 0o100 if info.st_uid == uid else 0o010 if info.st_gid in gids else 0o001
        if uid != 0 and not info.st_mode & bit:
            return False
    return True


def session_path(path: str, user: str) -> str:
    """The PATH of the login user's sessions: the container's, less what that user cannot reach (a `make run` as
    root passes root's own, /root/.pyenv/... among it), with the standard folders it may lack."""
    account = pwd.getpwnam(user)
    gids = {account.pw_gid, *os.getgrouplist(user, account.pw_gid)}
    kept = [p for p in dict.fromkeys(path.split(os.pathsep)) if p and reachable(p, account.pw_uid, gids)]
    return os.pathsep.join(kept + [p for p in STANDARD_PATH if p not in kept])


def install(ctx: PodContext, user: str, home: Path) -> None:
    """Write the environment file; as root, also hook it into login shells and put `podvisor` on sudo's PATH."""
    from entrypoint.bootstrap import settings_of, userenv

    env_file = ctx.paths.session_env_file
    environ = ctx.environment_for()
    environ["PATH"] = session_path(environ.get("PATH", ""), user)
    write(env_file, user, environ, userenv.shell_lines(settings_of(ctx)))
    if os.geteuid() != 0:
        return
    line = source_line(env_file)
    PROFILE_SNIPPET.write_text(f"# podvisor: the container's environment in login shells.\n{line}\n")
    for folder in {home, Path(pwd.getpwuid(0).pw_dir)}:  # root's sessions too: RunPod's and Vast's consoles say root
        prepend_once(folder / ".bashrc", line)
    program = Path(sys.executable).parent / "podvisor"
    if program.exists() and COMMAND.parent.is_dir():
        write_atomically(COMMAND, command_script(env_file, program), mode=0o755)
