"""autostop: the idle watchdog. Stops an idle pod through the provider, never a busy one, never with an upload
pending."""
from __future__ import annotations

import json
import logging
import time
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


def stop_pod(ctx: PodContext) -> None:
    """The autostop's actions (AUTOSTOP_ACTION for this provider), run now, said first: for the job's
    JOB_ON_EXIT=stop, in the job's process."""
    from services.autostop.actions import Actions

    settings = ctx.settings(AutostopSettings)
    actions = settings.actions(ctx.cloud.provider)
    logging.getLogger("job").warning("job: stopping the pod (%s)", ", ".join(actions))
    Actions(ctx, settings, alive_for=time.sleep).run(actions)


SERVICE = Service(
    name="autostop",
    settings=AutostopSettings,
    enabled=lambda ctx: ctx.settings(AutostopSettings).autostop_enabled,
    command=python_module("services.autostop"),
    priority=40,
    stop_wait=2,
    status=status,
    stop_pod=stop_pod,
)
