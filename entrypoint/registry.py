"""The service registry: every folder under `services/` (and PODVISOR_EXTRA_SERVICES) declares one `SERVICE`.

Adding a service means adding a folder whose `__init__.py` defines `SERVICE = Service(...)`; the schema,
the supervisord renderer, the prepare phase and `podvisor status` all find it here.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import shlex
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from collections.abc import Callable

if TYPE_CHECKING:
    from entrypoint.context import PodContext
    from entrypoint.schema import Section


@dataclass(frozen=True)
class Readiness:
    """A readiness check's answer; `detail` says why not, in words a user can act on."""

    ready: bool
    detail: str = ""


@dataclass(frozen=True)
class Service:
    """What supervisord and the entrypoint need to know about one supervised program."""

    name: str
    command: Callable[[PodContext], str]
    """The program's command line; supervisord runs it (no shell, so quote with shlex)."""
    settings: type[Section] | None = None
    """This service's section of the env schema."""
    advise: Callable[[Any], list[tuple[str, str]]] | None = None
    """Checks of the parsed section whose failures `config --check` reports but the service survives:
    (VARIABLE, "what is wrong; expected ...") pairs."""
    enabled: Callable[[PodContext], bool] = lambda ctx: True
    priority: int = 500
    """Start order: lower starts first and stops last."""
    stop_signal: str = "TERM"
    stop_wait: float | None = 5
    """Seconds between the stop signal and SIGKILL; None takes all the grace the others leave (the uploader)."""
    restart: Literal["true", "false", "unexpected"] = "true"
    start_seconds: int = 1
    """A program must stay up this long to count as started; a crash before that is a failed start."""
    start_retries: int = 3
    """Failed starts before the program is left FATAL instead of restart-looping."""
    never_given_up: bool = False
    """Left down (FATAL, or exiting at start again and again), it is started again after a growing pause instead
    of staying down: the user's way in (sshd) must come back on its own once what blocked it goes."""
    prepare: Callable[[PodContext], None] | None = None
    """Runs in the entrypoint before supervisord starts; an exception disables only this service."""
    ready: Callable[[PodContext], Readiness] | None = None
    """Whether it answers (a banner, an HTTP 200); without one, RUNNING counts as ready."""
    interactive: bool = False
    """Users connect to it (SSH, Jupyter, the API): the pod is ready for traffic once every interactive service
    answers (`podvisor status --ready`, the Kubernetes readiness probe, the Docker HEALTHCHECK)."""
    user: Callable[[PodContext], str | None] = lambda ctx: None
    environment: Callable[[PodContext], dict[str, str]] = lambda ctx: {}
    credentials_of: tuple[str, ...] = ()
    """Other sections whose control credentials this program acts with (the job stops the pod with the
    autostop's provider keys); the program keeps them from the user's code it runs (`environment_for()`)."""
    directory: Callable[[PodContext], str | None] = lambda ctx: None
    endpoint: Callable[[PodContext], str] | None = None
    """How a user outside reaches it (an ssh command, a URL), built with `ctx.cloud.endpoint`: status, the
    login banner and the container log's ready lines print it."""
    status: Callable[[PodContext], dict[str, Any]] | None = None
    """Extra facts for `podvisor status` (a queue depth, an idle countdown)."""
    activity: Callable[[PodContext], tuple[float | None, str]] | None = None
    """When a user last used it (epoch seconds; now while in use; None if never seen) and that in words: the
    idle autostop's signal for this service (SSH sessions, Jupyter's own activity clock, API requests)."""
    busy_while_running: bool = False
    """Its RUNNING state alone counts as activity for the idle autostop (a training job)."""
    stop_blocker: Callable[[PodContext], str | None] | None = None
    """Why the pod must not be stopped yet (uploads pending), or None: autostop and the job wait on it."""
    loss_on_stop: Callable[[PodContext], str | None] | None = None
    """What a stop would lose for good (a checkpoint no destination holds), or None: once autostop has waited
    AUTOSTOP_MAX_UPLOAD_WAIT_MINUTES on the stop blockers, it stops only when no service reports a loss."""
    restore: Callable[[PodContext], tuple[str, str]] | None = None
    """Brings back the newest committed checkpoint before the job's first attempt: (state, detail), the state
    "held" while no destination can be asked yet (the job then waits and asks again)."""
    stop_pod: Callable[[PodContext], None] | None = None
    """Stops (or terminates) the pod the way this service would, for the job's JOB_ON_EXIT=stop; says what it
    does first, and raises when it could not."""
    keep_files: Callable[[PodContext, list[Path]], int] | None = None
    """Keeps podvisor's own files (the run manifest, the job's log) beside the checkpoints; returns how many
    transfers it queued. The post-start step and the job hand their files to whichever service does this."""
    cli: Callable[[Any], None] | None = None
    """Adds this service's subcommands to `podvisor` (given argparse's subparsers)."""
    exit_codes: tuple[int, ...] = (0,)
    extra: dict[str, str] = field(default_factory=dict)
    """Further supervisord program options, for what the fields above do not cover."""


def python_module(module: str) -> Callable[[PodContext], str]:
    """The command of a service that is a Python module run with podvisor's own interpreter."""
    return lambda ctx: shlex.join([sys.executable, "-m", module])


def extra_dirs() -> list[Path]:
    """PODVISOR_EXTRA_SERVICES read raw: the registry is needed before the schema can be validated."""
    raw = os.environ.get("PODVISOR_EXTRA_SERVICES", "")
    return [Path(p.strip()) for p in raw.replace("\n", ",").split(",") if p.strip() and Path(p.strip()).is_absolute()]


def active(ctx: PodContext) -> list[Service]:
    """The services this boot actually started (boot.json), else the enabled ones with a valid section: one
    disabled by its prepare step (Jupyter without a usable config) is not asked or probed, or its refused
    connections would count as activity forever."""
    started = ctx.paths.active_services()
    return [svc for svc in discover() if svc.name in ctx.config.sections and svc.enabled(ctx)
            and (started is None or svc.name in started)]


def stop_reasons(ctx: PodContext, services: list[Service],
                 hook: Literal["stop_blocker", "loss_on_stop"]) -> list[str]:
    """What holds a stop (`stop_blocker`: uploads pending) or what it would lose (`loss_on_stop`), asked of
    each of `services`: the one answer the autostop and the job's JOB_ON_EXIT=stop both act on. A state that
    cannot be read holds the stop: it may be an upload."""
    out = []
    for svc in services:
        check = getattr(svc, hook)
        if check is None:
            continue
        try:
            reason = check(ctx)
        except Exception as exc:
            reason = f"{svc.name} state unreadable ({type(exc).__name__})"
        if reason:
            out.append(reason)
    return out


def configured(ctx: PodContext, hook: str) -> list[Service]:
    """Services with a valid section that offer `hook`, started at this boot or not: the job stops the pod with
    the autostop's actions even when the idle autostop itself is turned off."""
    return [svc for svc in discover() if getattr(svc, hook) is not None and svc.name in ctx.config.sections]


def keep_files(ctx: PodContext, paths: list[Path]) -> int:
    """Hand `paths` to every active service that keeps files (the uploader); how many transfers were queued."""
    return sum(svc.keep_files(ctx, paths) for svc in active(ctx) if svc.keep_files is not None)


def discover() -> list[Service]:
    """Every service, in start order."""
    return _discover(tuple(extra_dirs()))[0]


def broken_extras() -> dict[str, str]:
    """{folder: why} for each folder of PODVISOR_EXTRA_SERVICES that is not a usable service: it is left out
    and reported, never a reason for `podvisor start` to fail (RunPod would restart it in a billed loop)."""
    return _discover(tuple(extra_dirs()))[1]


@lru_cache(maxsize=8)
def _discover(extra: tuple[Path, ...]) -> tuple[list[Service], dict[str, str]]:
    import services

    found: dict[str, Service] = {}
    broken: dict[str, str] = {}
    for info in pkgutil.iter_modules(services.__path__):
        if info.ispkg:
            module = importlib.import_module(f"services.{info.name}")
            _add(found, getattr(module, "SERVICE", None), module.__name__)
    for folder in extra:
        if not folder.is_dir():
            broken[str(folder)] = ("PODVISOR_EXTRA_SERVICES names it, but there is no such folder; expected a folder "
                                   "of service folders, each with an __init__.py")
        for pkg in sorted(folder.glob("*/__init__.py")) if folder.is_dir() else []:
            try:
                _add(found, getattr(_load_extra(pkg), "SERVICE", None), str(pkg.parent))
            except Exception as exc:  # the user's code: any error at all leaves just that folder out
                broken[str(pkg.parent)] = f"{type(exc).__name__}: {exc}"
    return sorted(found.values(), key=lambda svc: (svc.priority, svc.name)), broken


def _load_extra(init: Path) -> Any:
    name = f"podvisor_extra_{init.parent.name}"
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _add(found: dict[str, Service], svc: Any, origin: str) -> None:
    if not isinstance(svc, Service):
        raise TypeError(f"{origin} defines no SERVICE = Service(...)")
    if svc.name in found:
        raise ValueError(f"two services are named {svc.name!r} ({origin})")
    found[svc.name] = svc
