"""The container's environment, for SSH sessions: sshd does not pass it on, so a session would otherwise lack
HF_TOKEN, PATH additions and the provider's variables. Written to a file only the login user can read, sourced
by login shells (profile.d) and, for `ssh host command`, from the top of the user's ~/.bashrc: bash run by sshd
reads ~/.bashrc, whose interactive-only guard would otherwise skip it (RunPod's images do the same)."""
from __future__ import annotations

import os
import pwd
import shlex
from pathlib import Path

SESSION_SPECIFIC = {"HOME", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "SHLVL", "TERM", "_", "MAIL", "HOSTNAME",
                    "SUDO_USER", "SUDO_UID", "SUDO_GID", "SUDO_COMMAND", "PODVISOR_SERVICE", "SUPERVISOR_ENABLED",
                    "SUPERVISOR_SERVER_URL", "SUPERVISOR_PROCESS_NAME", "SUPERVISOR_GROUP_NAME", "BASH_ENV"}


def render(environ: dict[str, str]) -> str:
    lines = ["# The container's environment, written by podvisor at boot for SSH sessions."]
    lines += [f"export {key}={shlex.quote(val)}" for key, val in sorted(environ.items())
              if key not in SESSION_SPECIFIC and key.isidentifier()]
    return "\n".join(lines) + "\n"


def write(path: Path, user: str, environ: dict[str, str] | None = None) -> None:
    """Write the file 0600, owned by `user`, atomically: it holds tokens."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(render(dict(os.environ if environ is None else environ)))
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        os.chown(tmp, entry.pw_uid, entry.pw_gid)
    os.replace(tmp, path)


MARK = "# podvisor-environment"


def source_line(path: Path) -> str:
    return f"[ -r {shlex.quote(str(path))} ] && . {shlex.quote(str(path))}  {MARK}"


def prepend_once(bashrc: Path, line: str) -> None:
    """Put `line` first in `bashrc`, replacing an earlier podvisor line (the state dir may have moved)."""
    old = bashrc.read_text().splitlines() if bashrc.exists() else []
    kept = [existing for existing in old if not existing.endswith(MARK)]
    bashrc.write_text("\n".join([line, *kept]) + "\n")
    if os.geteuid() == 0 and bashrc.parent.exists():
        owner = bashrc.parent.stat()
        os.chown(bashrc, owner.st_uid, owner.st_gid)
