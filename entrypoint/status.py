"""`podvisor status`: each service's supervisord state, pid, uptime and readiness, the provider's public
endpoints and the GPUs, as text for people or JSON for scripts and the container HEALTHCHECK."""
from __future__ import annotations

import json
import time
import xmlrpc.client
from typing import Any

import psutil

from entrypoint.bootstrap import describe
from entrypoint.context import PodContext
from entrypoint.gpu import inventory
from entrypoint.registry import active, discover, stop_reasons
from entrypoint.state_dir import UP, SupervisorState

EXITED_STATES = (SupervisorState.EXITED, SupervisorState.FATAL)


def published_processes(ctx: PodContext) -> tuple[dict[str, Any], str | None]:
    """The process table the event listener last published, for a user the control socket is not shared
    with; uptimes counted to now. The error is set when there is none or its supervisord is gone."""
    try:
        table = json.loads(ctx.paths.processes_file.read_text())
    except (OSError, ValueError):
        return {}, "supervisord's control socket is root's and no process table is published yet"
    if not psutil.pid_exists(table["supervisord_pid"]):
        return {}, "supervisord is not running (its last published process table is stale)"
    now = int(time.time())
    return {p["name"]: {**p, "now": now} for p in table["processes"]}, None


def collect(ctx: PodContext) -> dict[str, Any]:
    boot = ctx.paths.boot()
    given_up = ctx.paths.given_up()
    control = "full"
    try:
        processes = {p["name"]: p for p in ctx.paths.supervisor().supervisor.getAllProcessInfo()}
        supervisor_error = None
    except PermissionError:  # the login user without sudo (SSH_SUDO=false): the control socket is not theirs
        processes, supervisor_error = published_processes(ctx)
        control = "read-only: states as last published; the control socket is root's (SSH_SUDO=false)"
    except (OSError, xmlrpc.client.Error) as exc:
        processes, supervisor_error = {}, f"supervisord is not answering ({type(exc).__name__})"
    services: dict[str, Any] = {}
    for svc in discover():
        info = processes.get(svc.name)
        if info is None:
            reason = boot.get("disabled", {}).get(svc.name)
            if reason or not supervisor_error:
                services[svc.name] = {"state": "DISABLED", "reason": reason or "not started at this boot"}
            else:
                services[svc.name] = {"state": "DOWN", "reason": supervisor_error}
            continue
        entry: dict[str, Any] = {
            "state": info["statename"],
            "interactive": svc.interactive,
            "pid": info["pid"] or None,
            "uptime_s": max(0, info["now"] - info["start"]) if info["statename"] == SupervisorState.RUNNING else 0,
            "exit_status": info["exitstatus"] if info["statename"] in EXITED_STATES else None,
            "description": info["description"],
        }
        if svc.name in given_up and info["statename"] != SupervisorState.RUNNING:
            entry.update(state=SupervisorState.FATAL, reason=given_up[svc.name])
        if svc.ready is not None and info["statename"] == SupervisorState.RUNNING:
            readiness = svc.ready(ctx)
            entry.update(ready=readiness.ready, ready_detail=readiness.detail)
        else:
            done = info["statename"] == SupervisorState.EXITED and info["exitstatus"] in svc.program.exit_codes
            entry["ready"] = info["statename"] == SupervisorState.RUNNING or (done and svc.program.one_shot)
        if svc.endpoint is not None:
            entry["endpoint"] = svc.endpoint(ctx)
        if svc.status is not None:
            entry.update(svc.status(ctx))
        services[svc.name] = entry
    for name, reason in boot.get("disabled", {}).items():
        services.setdefault(name, {"state": "DISABLED", "reason": reason})
    gpus, gpu_summary = inventory()
    return {
        "provider": ctx.cloud.provider,
        "instance_id": ctx.cloud.instance_id,
        "run_id": boot.get("run_id"),
        "supervisord": supervisor_error or "running",
        "control": control,
        "bootstrap": {**ctx.paths.bootstrap_state(), "summary": describe(ctx.paths.bootstrap_state())},
        "services": services,
        "stop_blockers": stop_reasons(ctx, active(ctx), "blocker"),
        "gpus": gpus,
        "gpu_summary": gpu_summary,
        "config_problems": [str(p) for p in ctx.config.problems],
    }


def alive(report: dict[str, Any]) -> bool:
    """The stack is alive: supervisord answers (the liveness probe; a dead one means restart the container)."""
    return report["supervisord"] == "running"


def unready(report: dict[str, Any]) -> list[str]:
    """Why the pod is not ready (the readiness probe and HEALTHCHECK), nothing when it is: every enabled
    interactive service (SSH, Jupyter, the API) answers. One of them down for good (FATAL, given up) is a pod
    that is not ready, with its reason; a background service that failed or a job that ended is not."""
    if not alive(report):
        return [f"supervisord: {report['supervisord']}"]
    reasons = []
    for name, svc in report["services"].items():
        if svc["state"] == "DISABLED" or not svc.get("interactive"):
            continue
        if svc["state"] == SupervisorState.FATAL:
            reasons.append(f"{name} is down (FATAL){': ' + svc['reason'] if svc.get('reason') else ''}")
        elif not svc.get("ready"):
            reasons.append(f"{name} is not ready{': ' + svc['ready_detail'] if svc.get('ready_detail') else ''}")
    return reasons


def waiting(report: dict[str, Any]) -> list[str]:
    """Enabled services neither answering yet nor given up on (FATAL, EXITED)."""
    return [name for name, s in report["services"].items()
            if s["state"] in UP and not s.get("ready")]


def render_text(report: dict[str, Any]) -> str:
    lines = [f"provider: {report['provider']}" + (f" ({report['instance_id']})" if report["instance_id"] else ""),
             f"supervisord: {report['supervisord']}"
             + (f" ({report['control']})" if report["control"] != "full" else ""),
             f"bootstrap: {report['bootstrap']['summary']}",
             f"gpu: {report['gpu_summary']}", "services:"]
    for name, svc in report["services"].items():
        parts = [f"  {name:<12} {svc['state']:<9}"]
        if svc.get("pid"):
            parts.append(f"pid {svc['pid']}, up {_duration(svc.get('uptime_s', 0))}")
        if "ready" in svc and svc["state"] != "DISABLED":
            parts.append("ready" if svc["ready"] else f"not ready: {svc.get('ready_detail', '')}".rstrip(": "))
        if svc.get("reason"):
            parts.append(svc["reason"])
        if svc.get("summary"):
            parts.append(svc["summary"])
        if svc.get("endpoint"):
            parts.append(f"at {svc['endpoint']}")
        lines.append("  ".join(parts))
    lines += [f"a stop would wait: {reason}" for reason in report["stop_blockers"]]
    lines += [f"config problem: {p}" for p in report["config_problems"]]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"
