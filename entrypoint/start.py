"""`podvisor start`: validate → state dirs → each service's prepare step → supervisord.conf → run supervisord.

A problem in one service's section or prepare step disables that service only, with a line saying why;
sshd and the rest still come up, and the container never exits over it (RunPod restarts an exited
container, and the user pays for the loop).
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO

from entrypoint import leftovers, login_user, logs, session
from entrypoint.cloud import detect
from entrypoint.context import PodContext
from entrypoint.registry import Service, broken_extras, discover
from entrypoint.catalog import load
from entrypoint.supervisor_conf import EVENT_LISTENER, programs, stop_floor, write
from entrypoint.timings import phase, record

log = logging.getLogger("podvisor")


def prepare(ctx: PodContext) -> tuple[list[Service], dict[str, str]]:
    """Run the prepare steps; returns the services to supervise and {disabled service: reason}."""
    disabled: dict[str, str] = {}
    for problem in ctx.config.problems:
        if problem.warning:
            log.warning("config: %s", problem)
        elif problem.section in ("podvisor", "bootstrap"):
            log.error("config: %s (using the default instead)", problem)
        elif not problem.disables:
            log.error("config: %s (skipped; service %s still starts)", problem, problem.section)
        else:
            log.error("config: %s -> service %s disabled", problem, problem.section)
            disabled.setdefault(problem.section, f"invalid config: {problem}")
    for folder, why in broken_extras().items():
        log.error("extra service %s is left out: %s", folder, why)
        disabled[Path(folder).name] = f"broken extra service: {why}"
    chosen = []
    for svc in discover():
        if svc.name in disabled:
            continue
        if not svc.enabled(ctx):
            disabled[svc.name] = "not enabled"
            continue
        if svc.prepare is not None:
            try:
                with phase(ctx.paths.timings_file, ctx.run_id, f"prepare:{svc.name}"):
                    svc.prepare(ctx)
            except Exception as exc:
                log.exception("prepare step of %s failed -> service %s disabled: %s", svc.name, svc.name, exc)
                disabled[svc.name] = f"prepare failed: {exc}"
                continue
        chosen.append(svc)
    return chosen, disabled


def start() -> int:
    """Validate, take the state dir, prepare the services, write supervisord.conf, then run supervisord."""
    logs.configure("info", "podvisor: %(message)s")
    started, t0 = time.time(), time.monotonic()
    config = load(advise=True)
    ctx = PodContext(config, detect(os.environ, config.core.podvisor_provider if config.core else "auto"),
                     uuid.uuid4().hex[:12])
    if config.core:
        logs.configure(config.core.podvisor_log_level, "podvisor: %(message)s")
    record_validation = (time.monotonic() - t0) * 1000
    with_dirs = time.monotonic()
    use_state_dir(ctx)
    holder = hold_state_dir(ctx.paths.start_lock_file)
    if holder is None:
        log.error("another podvisor stack is running on %s (`podvisor status` shows it): this start touches "
                  "nothing of it and exits; stop that one first, or give this one its own PODVISOR_STATE_DIR",
                  ctx.state_dir)
        return 2
    forget_last_run(ctx)
    record(ctx.paths.timings_file, ctx.run_id, "validate", "ok" if config.ok else "problems", record_validation)
    record(ctx.paths.timings_file, ctx.run_id, "state_dirs", "ok", (time.monotonic() - with_dirs) * 1000)
    log.info("run %s on %s; state in %s", ctx.run_id, ctx.cloud.provider, ctx.state_dir)
    try:
        with phase(ctx.paths.timings_file, ctx.run_id, "login_user"):
            login_user.ensure(ctx)
        session.install(ctx, login_user.name(ctx), login_user.home(ctx))
    except Exception as exc:
        log.error("could not set up the login user %s: %s", ctx.core.ssh_user, exc)
    services, disabled = prepare(ctx)
    conf = render_boot(ctx, services, disabled, started)
    record(ctx.paths.timings_file, ctx.run_id, "exec_supervisord", "ok", (time.monotonic() - t0) * 1000)
    sys.stdout.flush()
    supervisord = shutil.which("supervisord", path=str(Path(sys.executable).parent)) or shutil.which("supervisord")
    argv = [supervisord, "-c", str(conf)] if supervisord else [sys.executable, "-m", "supervisor.supervisord",
                                                                  "-c", str(conf)]
    os.set_inheritable(holder.fileno(), True)  # the state dir's lock lives on in the program exec'd next
    level = ctx.core.podvisor_log_level
    os.execv(sys.executable, [sys.executable, "-m", "entrypoint.supervise", level, str(ctx.state_dir), *argv])


def use_state_dir(ctx: PodContext) -> None:
    """Make the state dir's folders; when the configured one is unusable, one for this boot only, said loudly."""
    try:
        for folder in (ctx.state_dir, ctx.paths.logs_dir, ctx.paths.services_dir):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fallback = Path(tempfile.mkdtemp(prefix="podvisor-state-", dir=fallback_base()))
        fallback.chmod(0o755)  # like a state dir on the volume: the login user's services read their config here
        log.error("!!! the state dir %s is unusable (%s): using %s for this boot; nothing there survives a "
                  "restart. Point PODVISOR_STATE_DIR at a writable folder on the volume !!!", ctx.state_dir,
                  exc.strerror or exc, fallback)
        ctx.core.podvisor_state_dir = fallback
        os.environ["PODVISOR_STATE_DIR"] = str(fallback)
        for folder in (ctx.paths.logs_dir, ctx.paths.services_dir):
            folder.mkdir(parents=True, exist_ok=True)


def forget_last_run(ctx: PodContext) -> None:
    """What the last run left that would mislead this one: its programs, its stop, its exit code, its
    bootstrap's and given-up services' records."""
    leftovers.sweep(ctx.state_dir)
    ctx.paths.stop_requested_file.unlink(missing_ok=True)  # a stop that ended the last run is no stop of this one
    ctx.paths.exit_code_file.unlink(missing_ok=True)
    ctx.paths.bootstrap_file.unlink(missing_ok=True)
    ctx.paths.given_up_file.unlink(missing_ok=True)


def render_boot(ctx: PodContext, services: list[Service], disabled: dict[str, str], started: float) -> Path:
    """supervisord.conf and boot.json (what this boot runs and why the rest does not), with a warning when the
    grace cannot hold the programs' stops; returns the config's path."""
    with phase(ctx.paths.timings_file, ctx.run_id, "render"):
        os.environ.update({"PODVISOR_RUN_ID": ctx.run_id, "PODVISOR_STATE_DIR": str(ctx.state_dir)})
        ctx.record_environment()
        conf = write(ctx, services)
        ctx.paths.boot_file.write_text(json.dumps({
            "run_id": ctx.run_id, "started_epoch_ms": int(started * 1000),
            "services": [svc.name for svc in services], "disabled": disabled,
        }, indent=2))
    supervised = programs(services)
    floor = stop_floor(supervised)
    if ctx.core.podvisor_grace_seconds < floor:
        log.warning("config: PODVISOR_GRACE_SECONDS=%g is less than the %g s a stop of %d programs can take (they "
                    "stop one after another, podvisor's own one-shots included: at least 1 s wait and 1 s of "
                    "supervisord's loop each, plus 2 s); a program that ignores SIGTERM may still run when the "
                    "platform kills the container. Set it to %d or more, and the platform's stop timeout above it",
                    ctx.core.podvisor_grace_seconds, floor, len(supervised), floor)
    names = ", ".join(svc.name for svc in services) or "none"
    own = ", ".join(name for name in supervised if name not in {svc.name for svc in services})
    log.info("starting supervisord with: %s (+%s, %s)", names, EVENT_LISTENER, own)
    return conf


def fallback_base() -> Path:
    """Where a state dir goes for one boot when the configured one is unusable: never under a folder others may
    write (/tmp), where sshd's StrictModes would refuse every key kept in it."""
    base = Path("/run") if os.geteuid() == 0 else Path.home() / ".cache"
    base.mkdir(parents=True, exist_ok=True)
    return base


def hold_state_dir(lock: Path) -> IO[str] | None:
    """An exclusive lock on the state dir, kept open (and so held) by this process until it exits; None when a
    live stack holds it. Checked before anything of the state dir is swept or rewritten."""
    holder = lock.open("a")
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder.close()
        return None
    return holder
