"""autostop: the idle watchdog. Stops an idle pod through the provider, never a busy one, never with an upload
pending."""
from __future__ import annotations

import json
import logging
import time
from typing import Any

from entrypoint.context import PodContext
from entrypoint.registry import AFTER_INTERACTIVE, Program, Service, StopsPod, python_module
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


def prepare(ctx: PodContext) -> None:
    """Each stop action in AUTOSTOP_ACTION that lacks what it needs is said at boot; when none can work, the
    autostop is an error (it could never stop the idle pod it watches), with what to set."""
    from services.autostop.actions import Actions

    settings = ctx.settings(AutostopSettings)
    actions = settings.actions(ctx.cloud.provider)
    lacking = {name: why for name in actions if (why := Actions(ctx, settings, time.sleep).missing(name))}
    if actions and all(name in lacking for name in actions):
        raise RuntimeError("AUTOSTOP_ACTION: no stop action can work (" + "; ".join(
            f"{name} {why}" for name, why in lacking.items()) + "), so an idle pod would never be stopped; set "
            "what it needs, or AUTOSTOP_ACTION=exit (the container exits) or none (a dry run)")
    for name, why in lacking.items():
        logging.getLogger("podvisor").warning("autostop: stop action %s %s; the next action is used", name, why)


SERVICE = Service(
    name="autostop",
    settings=AutostopSettings,
    enabled=lambda ctx: ctx.settings(AutostopSettings).autostop_enabled,
    program=Program(command=python_module("services.autostop"), priority=40, stop_wait=2,
                    after=(AFTER_INTERACTIVE,)),  # its idle clock counts from the boot, not from its own start
    prepare=prepare,
    status=status,
    capabilities=(StopsPod(stop=stop_pod),),
)
