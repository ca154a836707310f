"""Bootstrap steps (repo, requirements, datasets, pre-start hooks) that supervisord runs as a one-shot program beside
sshd and Jupyter, so SSH answers while a clone or a requirements install takes minutes; the job and the post-start
hook wait for it. Progress goes to the log and to bootstrap.json (`podvisor status` shows "bootstrap:
installing requirements, 40 s"). Each step is timed in timings.jsonl; a failing step is reported and skipped,
so a broken hook never takes SSH down with it (unless HOOKS_STRICT asks for exactly that)."""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from entrypoint import login_user
from entrypoint.bootstrap import hooks, prefetch, repo, userenv
from entrypoint.bootstrap.settings import BootstrapSettings
from entrypoint.files import write_atomically
from entrypoint.timings import phase

if TYPE_CHECKING:  # a type only: the context's catalog reads this package's settings
    from entrypoint.context import PodContext

log = logging.getLogger("podvisor")


class HookFailed(RuntimeError):
    """A hook failed with HOOKS_STRICT=true: the boot stops."""


BOOTSTRAP_POLL_SECONDS = 0.5


def wait_done(ctx: PodContext, who: str, stopping=lambda: False) -> dict:
    """Block until the bootstrap finished (done or failed), saying once what `who` waits for."""
    said = False
    while (state := ctx.paths.bootstrap_state()).get("state") in ("pending", "running") and not stopping():
        if not said:
            log.info("%s: waiting for the bootstrap (%s) to finish", who, describe(state))
            said = True
        time.sleep(BOOTSTRAP_POLL_SECONDS)
    return state


def describe(state: dict, now: float | None = None) -> str:
    """`installing requirements, 40 s` / `done in 12 s`: the bootstrap's progress in words."""
    now = time.time() if now is None else now
    if state.get("state") == "running":
        step = STEP_WORDS.get(state.get("step", ""), f"running {state.get('step', 'its first step')}")
        return f"{step}, {now - state.get('step_started', state.get('started', now)):.0f} s"
    if state.get("state") in ("done", "failed"):
        took = f"{state['state']} in {state.get('finished', now) - state.get('started', now):.0f} s"
        said = [state["reason"]] if state.get("reason") else []
        said += state.get("notes", [])  # a hook that ran as the login user, not root
        return f"{took}: {'; '.join(said)}" if said else took
    return "not started yet"


STEP_WORDS = {"repo": "syncing the repository", "requirements": "installing requirements",
              "datasets": "fetching DATASETS",
              "pre_start": "running PRE_START_SCRIPT", "on_start": "running on_start.sh",
              "provisioning": "running PROVISIONING_SCRIPT"}


def settings_of(ctx: PodContext) -> BootstrapSettings | None:
    return ctx.optional_settings(BootstrapSettings)


def run(ctx: PodContext) -> None:
    """All steps, with progress in bootstrap.json. A strict hook's failure fails the bootstrap, so the job does
    not start; SSH and the rest stay up for the user to look (exiting would make RunPod restart in a loop)."""
    started = time.time()
    write_state(ctx, state="running", started=started)
    try:
        before_services(ctx)
    except HookFailed as exc:
        write_state(ctx, state="failed", started=started, finished=time.time(), reason=str(exc),
                    notes=ctx.paths.bootstrap_state().get("notes", []))
        log.error("bootstrap FAILED: %s. The job will not start; SSH and the other services stay up.", exc)
        return
    write_state(ctx, state="done", started=started, finished=time.time(),
                notes=ctx.paths.bootstrap_state().get("notes", []))
    log.info("bootstrap: done in %.1f s", time.time() - started)


def write_state(ctx: PodContext, **state: object) -> None:
    write_atomically(ctx.paths.bootstrap_file, json.dumps(state))


def before_services(ctx: PodContext) -> None:
    settings = settings_of(ctx)
    if settings is None:
        log.error("bootstrap skipped: its variables are invalid (see the config lines above)")
        return
    steps = [("repo", lambda: log.info("bootstrap: %s", repo.sync(settings, login_user.name(ctx))))]
    if settings.requirements_install:  # looked for when its turn comes: the clone just before may bring it
        steps.append(("requirements", lambda: log.info("bootstrap: %s", install(ctx, settings))))
    if settings.datasets:  # the job must not start without its data: a failed fetch fails the bootstrap
        steps.append(("datasets", lambda: log.info("bootstrap: %s", prefetch.prefetch(ctx, settings))))
    for name, path in pre_start_hooks(ctx, settings):
        steps.append((name, partial(_hook_at, ctx, path, name)))
    for name, step in steps:
        strict = ("the job needs its data" if name == "datasets" else
                  "HOOKS_STRICT=true" if settings.hooks_strict and name not in ("repo", "requirements") else "")
        # Progress is the bootstrap's own: the post-start program's steps run meanwhile and are not its steps.
        write_state(ctx, **{**ctx.paths.bootstrap_state(), "step": name, "step_started": time.time()})
        run_step(ctx, name, step, strict=strict)


def install(ctx: PodContext, settings: BootstrapSettings) -> str:
    requirements = settings.repo_dir / "requirements.txt"
    if not requirements.exists():
        return f"no {requirements}; nothing to install"
    stamp = ctx.paths.bootstrap_dir / "requirements.sha256"
    return userenv.install_requirements(requirements, stamp, settings, login_user.name(ctx))


def pre_start_hooks(ctx: PodContext, settings: BootstrapSettings) -> list[tuple[str, Callable[[], Path]]]:
    """(name, where the script is) in run order; a URL is downloaded inside its own timed step."""
    found: list[tuple[str, Callable[[], Path]]] = []
    if settings.pre_start_script:
        script = settings.pre_start_script
        found.append(("pre_start", lambda: script))
    on_start = ctx.core.podvisor_workspace / "on_start.sh"
    if on_start.exists():
        found.append(("on_start", lambda: on_start))
    if settings.provisioning_script:
        found.append(("provisioning", lambda: hooks.fetch_script(settings.provisioning_script)))
    return found


def _hook_at(ctx: PodContext, where: Callable[[], Path], name: str) -> None:
    """A pre-start hook whose script is found (a URL downloaded) only when its step runs."""
    hook(ctx, where(), name)


def hook(ctx: PodContext, path: Path, name: str) -> None:
    """One hook, in the user's environment; a hook the login user could change runs as that user, and
    bootstrap.json keeps that note for `podvisor status`."""
    note = hooks.run_hook(path, name, ctx.environment_for(), login_user.name(ctx))
    if note:
        state = ctx.paths.bootstrap_state()
        write_state(ctx, **{**state, "notes": [*state.get("notes", []), note]})


def run_step(ctx: PodContext, name: str, step, strict: str = "") -> None:
    """One timed step (the bootstrap's and the post-start program's); a failure is logged and the boot goes on,
    unless `strict` says why it may not."""
    try:
        with phase(ctx.paths.timings_file, ctx.run_id, f"bootstrap:{name}"):
            step()
    except Exception as exc:
        if strict:
            raise HookFailed(f"{name}: {exc} ({strict})") from exc
        log.error("bootstrap: %s failed: %s; boot goes on", name, exc)
