"""autostop: the idle watchdog. Stops an idle pod through the provider, never a busy one, never with an upload
pending."""
from __future__ import annotations

import json
from typing import Any

from entrypoint.context import PodContext
from entrypoint.registry import Service, python_module
from services.autostop.layout import decision_path
from services.autostop.settings import AutostopSettings


def status(ctx: PodContext) -> dict[str, Any]:
    try:
        decision = json.loads(decision_path(ctx).read_text())
    except (OSError, ValueError):
        return {"summary": "not evaluated yet"}
    summary = decision["message"] + (f"; last stop failed: {decision['last_error']}" if decision.get("last_error")
                                     else "")
    return {"summary": summary, "autostop": decision}


SERVICE = Service(
    name="autostop",
    settings=AutostopSettings,
    enabled=lambda ctx: ctx.settings(AutostopSettings).autostop_enabled,
    command=python_module("services.autostop"),
    priority=40,
    stop_wait=2,
    status=status,
)
