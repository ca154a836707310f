"""Bootstrap steps the entrypoint runs before supervisord (repo, requirements, pre-start hooks), and once every
service is up (manifest, post-start hook). Each is timed in timings.jsonl; a failing step is reported and
skipped, so a broken hook never takes SSH down with it (unless HOOKS_STRICT asks for exactly that)."""
from __future__ import annotations

import logging
from pathlib import Path

from entrypoint import login_user
from entrypoint.bootstrap import hooks, repo
from entrypoint.bootstrap.settings import BootstrapSettings
from entrypoint.context import PodContext
from entrypoint.timings import phase

log = logging.getLogger("podvisor")


class HookFailed(RuntimeError):
    """A hook failed with HOOKS_STRICT=true: the boot stops."""


def settings_of(ctx: PodContext) -> BootstrapSettings | None:
    return ctx.config.sections.get("bootstrap")  # type: ignore[return-value]


def before_services(ctx: PodContext) -> None:
    settings = settings_of(ctx)
    if settings is None:
        log.error("bootstrap skipped: its variables are invalid (see the config lines above)")
        return
    steps = [("repo", lambda: log.info("bootstrap: %s", repo.sync(settings, login_user.name(ctx))))]
    requirements = settings.repo_dir / "requirements.txt"
    if settings.requirements_install and requirements.exists():
        stamp = ctx.state_dir / "bootstrap" / "requirements.sha256"
        steps.append(("requirements", lambda: log.info("bootstrap: %s",
                                                      hooks.install_requirements(requirements, stamp))))
    for name, path in pre_start_hooks(ctx, settings):
        steps.append((name, lambda path=path, name=name: hooks.run_hook(path, name)))
    for name, step in steps:
        run_step(ctx, name, step, strict=settings.hooks_strict and name not in ("repo", "requirements"))


def pre_start_hooks(ctx: PodContext, settings: BootstrapSettings) -> list[tuple[str, Path]]:
    found = []
    if settings.pre_start_script:
        found.append(("pre_start", settings.pre_start_script))
    on_start = ctx.core.podvisor_workspace / "on_start.sh"
    if on_start.exists():
        found.append(("on_start", on_start))
    return found


def run_step(ctx: PodContext, name: str, step, strict: bool = False) -> None:
    try:
        with phase(ctx.timings_file, ctx.run_id, f"bootstrap:{name}"):
            step()
    except Exception as exc:
        if strict:
            raise HookFailed(f"{name}: {exc} (HOOKS_STRICT=true stops the boot)") from exc
        log.error("bootstrap: %s failed: %s; boot goes on", name, exc)
