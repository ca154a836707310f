"""Render supervisord.conf from the enabled services: one `[program:<name>]` each, plus the event listener.

The choices here are what keep a pod alive and cheap: programs that crash at start end FATAL instead of
restart-looping, a FATAL program never stops supervisord, and the stop waits are budgeted so the whole
stop fits PODVISOR_GRACE_SECONDS with the uploader (stopped last) getting what the others leave.
"""
from __future__ import annotations

import getpass
import grp
import os
import pwd
import secrets
import shlex
import shutil
import sys
from pathlib import Path

from entrypoint import login_user
from entrypoint.context import STOP_MARGIN_SECONDS, STOP_STEP_SECONDS, PodContext
from entrypoint.files import write_atomically
from entrypoint.bootstrap.programs import CORE_PROGRAMS
from entrypoint.registry import Program, Service
from entrypoint.state_dir import SUPERVISOR_USER

EVENT_LISTENER = "podvisor-events"


def programs(services: list[Service]) -> dict[str, Program]:
    """Every program supervisord runs, by name, in start order: the services and podvisor's own one-shots."""
    found = {svc.name: svc.program for svc in services} | CORE_PROGRAMS
    return dict(sorted(found.items(), key=lambda item: (item[1].priority, item[0])))


def stop_waits(programs: dict[str, Program], grace: float) -> dict[str, int]:
    """Split the grace into per-program stop waits. Stops run one program at a time in reverse start order,
    each costing its exit plus STOP_STEP_SECONDS. A program with no fixed wait (the uploader, stopped last)
    ends itself at `PodContext.stop_deadline`, so its wait is the whole grace less the margin and its step: the
    kill can never come before its own deadline. The fixed waits share half of the rest (all of it with no such
    program), scaled down to fit, at least 1 s each."""
    fixed = {name: float(p.stop_wait) for name, p in programs.items() if p.stop_wait is not None}
    elastic = [name for name, p in programs.items() if p.stop_wait is None]
    left = grace - STOP_MARGIN_SECONDS - STOP_STEP_SECONDS * (len(fixed) + len(elastic))
    share = max(0.0, left) * (0.5 if elastic else 1.0)
    scale = min(1.0, share / sum(fixed.values()))
    waits = {name: max(1, int(wait * scale)) for name, wait in fixed.items()}
    waits.update({name: max(1, int(grace - STOP_MARGIN_SECONDS - STOP_STEP_SECONDS)) for name in elastic})
    return waits


def stop_floor(programs: dict[str, Program]) -> float:
    """The longest a stop can take when every program uses its shortest wait (1 s) and its step: below this, a
    grace cannot be kept by a program that ignores SIGTERM."""
    return STOP_MARGIN_SECONDS + (1 + STOP_STEP_SECONDS) * len(programs)


def login_group(ctx: PodContext) -> grp.struct_group | None:
    """The login user's group, which may use the control socket, so `podvisor status` works in an SSH session
    without sudo; None when podvisor does not run as root (then the login user is its owner already), or when
    the login user has no sudo (SSH_SUDO=false): the socket starts and stops services, root's business then,
    and status reads the published process table instead."""
    if os.geteuid() != 0 or not ctx.core.ssh_sudo:
        return None
    try:
        return grp.getgrgid(pwd.getpwnam(login_user.name(ctx)).pw_gid)
    except KeyError:
        return None


def credentials(ctx: PodContext) -> tuple[str, str]:
    """The control socket's credentials, made once per state dir, readable by root and the login group."""
    path = ctx.paths.credentials_file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(24))
    group = login_group(ctx)
    if group is not None:
        os.chown(path, 0, group.gr_gid)
        path.chmod(0o640)
    else:  # shared at an earlier boot, perhaps, with SSH_SUDO on
        path.chmod(0o600)
    return SUPERVISOR_USER, path.read_text().strip()


def program_command(ctx: PodContext, owners: tuple[str, ...], command: str, user: str | None = None) -> str:
    """How supervisord runs the `command` of the `owners`' sections:
    - without the control credentials it has no use for (`PodContext.environment_for`): supervisord can add
      variables to a program's environment, never take them away, so `env -u` does (it names, never shows);
    - as `user`, switched by setpriv only after that, as root: supervisord's own `user=` switches first, and the
      login user could read the whole environment of its own process before `env -u` ran (`/proc/<pid>/environ`);
    - with SIGTERM when supervisord dies (setpriv sets it after the switch, and it lasts through the execs),
      instead of living on as an orphan that holds its port."""
    hidden = sorted(set(os.environ) - set(ctx.environment_for(*owners)))
    setpriv = shutil.which("setpriv")
    switch: list[str] = []
    if user and user != getpass.getuser():
        if not setpriv:  # util-linux, in every Debian and Ubuntu base
            raise RuntimeError(f"setpriv (util-linux) is missing: it runs programs as {user} once their "
                               "environment is cleaned; install util-linux")
        account = pwd.getpwnam(user)
        switch = [f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups"]
    if setpriv:
        command = shlex.join([setpriv, *switch, "--pdeathsig", "TERM", "--"]) + " " + command
    if hidden:
        command = shlex.join(["env", *[arg for name in hidden for arg in ("-u", name)], "--"]) + " " + command
    return command


def _value(text: str) -> str:
    """supervisord expands `%(name)s` in values; a literal percent must be doubled."""
    if "\n" in text:
        raise ValueError(f"a supervisord value cannot hold a newline: {text[:40]!r}")
    return text.replace("%", "%%")


def _environment(env: dict[str, str]) -> str:
    for key, val in env.items():
        if '"' in val or not key.isidentifier():
            raise ValueError(f"environment entry {key} cannot be written to supervisord.conf")
    return ",".join(f'{key}="{_value(val)}"' for key, val in env.items())


def render(ctx: PodContext, services: list[Service]) -> str:
    """supervisord.conf: its control socket and its own settings, then one program section per program and the
    event listener's."""
    found = programs(services)
    waits = stop_waits(found, ctx.core.podvisor_grace_seconds)
    lines = _supervisord(ctx)
    for name, program in found.items():
        lines += _program(ctx, name, program, waits[name])
    return "\n".join([*lines, *_event_listener()])


def _supervisord(ctx: PodContext) -> list[str]:
    core = ctx.core
    user, password = credentials(ctx)
    sock = ctx.paths.socket_path
    group = login_group(ctx)
    return [
        "; Generated by `podvisor start` from the environment; edits are overwritten at the next start.",
        "[unix_http_server]",
        f"file={_value(str(sock))}",
        "chmod=0770" if group else "chmod=0700",
        *([f"chown=root:{group.gr_name}"] if group else []),
        f"username={user}",
        f"password={_value(password)}",
        "",
        "[supervisord]",
        "nodaemon=true",
        # Its own lines go to the container log (nodaemon, not silent) and to a rotated file beside the others.
        f"logfile={_value(str(ctx.paths.program_log('supervisord')))}",
        f"logfile_maxbytes={core.podvisor_log_max_mb}MB",
        f"logfile_backups={core.podvisor_log_backups}",
        "silent=false",
        f"loglevel={core.podvisor_log_level}",
        f"pidfile={_value(str(ctx.state_dir / 'supervisord.pid'))}",
        f"childlogdir={_value(str(ctx.paths.logs_dir))}",
        f"user={getpass.getuser()}",
        "minfds=4096",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{_value(str(sock))}",
        f"username={user}",
        f"password={_value(password)}",
        "",
    ]


def _event_listener() -> list[str]:
    return [
        f"[eventlistener:{EVENT_LISTENER}]",
        f"command={_value(shlex.join([sys.executable, '-m', 'entrypoint.events']))}",
        "events=PROCESS_STATE,PROCESS_LOG,SUPERVISOR_STATE_CHANGE",
        "buffer_size=4096",
        "priority=1",
        "autorestart=true",
        "startsecs=0",
        # supervisord checks a stop's deadline before it reaps the exited: with 1 s, a listener that had
        # exited cleanly was often "killed with SIGKILL" (a Ctrl-C of `make run` showed it in one run of two).
        f"stopwaitsecs={int(STOP_MARGIN_SECONDS)}",
        "stdout_logfile=NONE",
        "stderr_logfile=/dev/stdout",
        "stderr_logfile_maxbytes=0",
        "",
    ]


def _program(ctx: PodContext, name: str, program: Program, stop_wait: int) -> list[str]:
    core = ctx.core
    env = {"PODVISOR_SERVICE": name, **program.environment(ctx)}
    command = program_command(ctx, (name, *program.credentials_of), program.command(ctx), program.user(ctx))
    restart = program.restart
    lines = [
        f"[program:{name}]",
        f"command={_value(command)}",
        f"priority={program.priority}",
        f"autostart={'false' if program.after else 'true'}",
        f"autorestart={restart.autorestart}",
        f"startsecs={restart.start_seconds}",
        f"startretries={restart.start_retries}",
        f"exitcodes={','.join(str(c) for c in program.exit_codes)}",
        f"stopsignal={program.stop_signal}",
        f"stopwaitsecs={stop_wait}",
        "stopasgroup=true",
        "killasgroup=true",
        "redirect_stderr=true",
        f"stdout_logfile={_value(str(ctx.paths.program_log(name)))}",
        f"stdout_logfile_maxbytes={core.podvisor_log_max_mb}MB",
        f"stdout_logfile_backups={core.podvisor_log_backups}",
        "stdout_events_enabled=true",
        f"environment={_environment(env)}",
    ]
    directory = program.directory(ctx)
    if directory:
        lines.append(f"directory={_value(directory)}")
    lines += [f"{key}={_value(val)}" for key, val in program.extra.items()]
    return [*lines, ""]


def write(ctx: PodContext, services: list[Service]) -> Path:
    path = ctx.paths.supervisord_conf
    write_atomically(path, render(ctx, services), mode=0o600)
    return path
