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
from typing import TYPE_CHECKING, Any, Literal, TypeVar
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
class Restart:
    """When a program is started again: the one place a restart is decided. supervisord applies `when`,
    `start_seconds` and `start_retries`; the event listener applies the rest (a program that dies soon after
    each start is left down, or, with `never_give_up`, started again after a growing pause)."""

    when: Literal["always", "never", "on-failure"] = "always"
    """always: after any exit; never: a one-shot (the bootstrap, the job's runner); on-failure: after an exit
    with a code outside `Program.exit_codes`."""
    start_seconds: int = 1
    """A program must stay up this long to count as started; a crash before that is a failed start."""
    start_retries: int = 3
    """Failed starts before the program is left FATAL instead of restart-looping."""
    never_give_up: bool = False
    """Left down (FATAL, or exiting at start again and again), it is started again after a growing pause instead
    of staying down: the user's way in (sshd) must come back on its own once what blocked it goes."""

    @property
    def autorestart(self) -> str:
        """supervisord's spelling of `when`."""
        return {"always": "true", "never": "false", "on-failure": "unexpected"}[self.when]


@dataclass(frozen=True)
class Program:
    """What supervisord needs to run one program: its command line and how it is started, restarted and
    stopped. Services, the bootstrap and the post-start step are all programs of this kind."""

    command: Callable[[PodContext], str]
    """The program's command line; supervisord runs it (no shell, so quote with shlex)."""
    priority: int = 500
    """Start order: lower starts first and stops last."""
    restart: Restart = Restart()
    exit_codes: tuple[int, ...] = (0,)
    stop_signal: str = "TERM"
    stop_wait: float | None = 5
    """Seconds between the stop signal and SIGKILL; None takes all the grace the others leave (the uploader)."""
    after: tuple[str, ...] = ()
    """Programs this one starts after, once each has settled: a one-shot has exited, any other is up or was
    given up on. supervisord has no dependencies: such a program is not started with the others, and the
    event listener starts it when they have settled (AFTER_ALL: every other service; AFTER_INTERACTIVE: the
    services a person connects to)."""
    user: Callable[[PodContext], str | None] = lambda ctx: None
    environment: Callable[[PodContext], dict[str, str]] = lambda ctx: {}
    directory: Callable[[PodContext], str | None] = lambda ctx: None
    credentials_of: tuple[str, ...] = ()
    """Other sections whose control credentials this program acts with (the job stops the pod with the
    autostop's provider keys); the program keeps them from the user's code it runs (`environment_for()`)."""
    extra: dict[str, str] = field(default_factory=dict)
    """Further supervisord program options, for what the fields above do not cover."""

    @property
    def one_shot(self) -> bool:
        return self.restart.when == "never"


AFTER_ALL = "*"
AFTER_INTERACTIVE = "interactive"


# -- what a service can do for the others: each capability has one or a few implementers -------------------
@dataclass(frozen=True)
class Restores:
    """Brings back the newest committed checkpoint before the job's first attempt."""

    restore: Callable[[PodContext], Restored]


@dataclass(frozen=True)
class KeepsFiles:
    """Keeps podvisor's own files (the run manifest, the job's log) beside the checkpoints; returns how many
    transfers it queued. The post-start step and the job hand their files to whichever service does this."""

    keep: Callable[[PodContext, list[Path]], int]


@dataclass(frozen=True)
class HoldsStop:
    """What a stop must wait for: `blocker` says why the pod must not be stopped yet (uploads pending) and
    `loss` what a stop would lose for good (a checkpoint no destination holds), each None when nothing. Once
    autostop has waited AUTOSTOP_MAX_UPLOAD_WAIT_MINUTES on the blockers, it stops only when no service reports
    a loss."""

    blocker: Callable[[PodContext], str | None]
    loss: Callable[[PodContext], str | None]


@dataclass(frozen=True)
class StopsPod:
    """Stops (or terminates) the pod, for the job's JOB_ON_EXIT=stop; says what it does first, and raises when
    it could not."""

    stop: Callable[[PodContext], None]


@dataclass(frozen=True)
class LastUse:
    """When a user last used a service (epoch seconds; now while in use; None if never seen), and that in words."""

    at: float | None
    words: str


RestoreState = Literal["restored", "local", "empty", "held", "unreachable"]


@dataclass(frozen=True)
class Restored:
    """What a restore before the job's first attempt did, and that in words. "held": no destination can be asked
    yet (the job waits and asks again); "unreachable": none could be, and RESTORE_REQUIRED=false starts it."""

    state: RestoreState
    detail: str


@dataclass(frozen=True)
class Activity:
    """The idle autostop's signal for this service: `last` says when a user last used it (epoch seconds; now
    while in use; None if never seen) and that in words (SSH sessions, Jupyter's own clock, API requests);
    `while_running` makes its RUNNING state alone count (a training job)."""

    last: Callable[[PodContext], LastUse] | None = None
    while_running: bool = False


Capability = Restores | KeepsFiles | HoldsStop | StopsPod | Activity
C = TypeVar("C", Restores, KeepsFiles, HoldsStop, StopsPod, Activity)


@dataclass(frozen=True)
class Service:
    """One supervised program and what the entrypoint, `podvisor status` and the other services know of it."""

    name: str
    program: Program
    settings: type[Section] | None = None
    """This service's section of the env schema."""
    advise: Callable[[Any], list[tuple[str, str]]] | None = None
    """Checks of the parsed section whose failures `config --check` reports but the service survives:
    (VARIABLE, "what is wrong; expected ...") pairs."""
    enabled: Callable[[PodContext], bool] = lambda ctx: True
    prepare: Callable[[PodContext], None] | None = None
    """Runs in the entrypoint before supervisord starts; an exception disables only this service."""
    ready: Callable[[PodContext], Readiness] | None = None
    """Whether it answers (a banner, an HTTP 200); without one, RUNNING counts as ready."""
    interactive: bool = False
    """Users connect to it (SSH, Jupyter, the API): the pod is ready for traffic once every interactive service
    answers (`podvisor status --ready`, the Kubernetes readiness probe, the Docker HEALTHCHECK)."""
    endpoint: Callable[[PodContext], str] | None = None
    """How a user outside reaches it (an ssh command, a URL), built with `ctx.cloud.endpoint`: status, the
    login banner and the container log's ready lines print it."""
    status: Callable[[PodContext], dict[str, Any]] | None = None
    """Extra facts for `podvisor status` (a queue depth, an idle countdown)."""
    cli: Callable[[Any], None] | None = None
    """Adds this service's subcommands to `podvisor` (given argparse's subparsers)."""
    capabilities: tuple[Capability, ...] = ()
    """What it does for the others (restore, keep files, hold a stop, stop the pod, report activity)."""

    def capability(self, kind: type[C]) -> C | None:
        return next((c for c in self.capabilities if isinstance(c, kind)), None)


def offering(services: list[Service], kind: type[C]) -> list[tuple[Service, C]]:
    """The services of `services` that can do `kind`, each with its capability."""
    return [(svc, found) for svc in services if (found := svc.capability(kind)) is not None]


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


def stop_reasons(ctx: PodContext, services: list[Service], what: Literal["blocker", "loss"]) -> list[str]:
    """What holds a stop (`blocker`: uploads pending) or what it would lose (`loss`), asked of each of
    `services`: the one answer the autostop and the job's JOB_ON_EXIT=stop both act on. A state that cannot be
    read holds the stop: it may be an upload."""
    out = []
    for svc, holds in offering(services, HoldsStop):
        try:
            reason = holds.blocker(ctx) if what == "blocker" else holds.loss(ctx)
        except Exception as exc:
            reason = f"{svc.name} state unreadable ({type(exc).__name__})"
        if reason:
            out.append(reason)
    return out


def configured(ctx: PodContext, kind: type[C]) -> list[C]:
    """The capabilities of kind `kind` of the services with a valid section, started at this boot or not: the
    job stops the pod with the autostop's actions even when the idle autostop itself is turned off."""
    return [found for svc, found in offering(discover(), kind) if svc.name in ctx.config.sections]


def keep_files(ctx: PodContext, paths: list[Path]) -> int:
    """Hand `paths` to every active service that keeps files (the uploader); how many transfers were queued."""
    return sum(keeps.keep(ctx, paths) for _, keeps in offering(active(ctx), KeepsFiles))


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
    return sorted(found.values(), key=lambda svc: (svc.program.priority, svc.name)), broken


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
