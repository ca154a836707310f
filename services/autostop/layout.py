"""Where the autostop publishes its decision (idle for how long, what holds a stop): the monitor writes it,
`podvisor status` reads it through the service's declaration, which must not load the monitor."""
from __future__ import annotations

from pathlib import Path

from entrypoint.context import PodContext


def decision_path(ctx: PodContext) -> Path:
    return ctx.paths.service_dir("autostop") / "decision.json"
