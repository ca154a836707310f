"""The autostop process: evaluate the signals every AUTOSTOP_POLL_SECONDS, publish the decision, warn, and
run the stop actions once the pod has been idle long enough and nothing (an upload) holds the stop."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial

from entrypoint.context import PodContext
from entrypoint.files import write_atomically
from entrypoint.redact import redact, secrets_of
from entrypoint.registry import Activity, LastUse, active, offering, stop_reasons
from services.autostop import signals as sig
from services.autostop.actions import Actions
from services.autostop.layout import decision_path
from services.autostop.settings import AutostopSettings
from services.autostop.timeline import Decision, Timeline

log = logging.getLogger("autostop")
RETRY_FAILED_STOP_SECONDS = 300


class Monitor:
    def __init__(self, ctx: PodContext, clock: Callable[[], float] = time.time) -> None:
        self.ctx, self.clock = ctx, clock
        self.settings = ctx.settings(AutostopSettings)
        self.actions = self.settings.actions(ctx.cloud.provider)
        started_ms = ctx.paths.boot().get("started_epoch_ms")
        boot = started_ms / 1000 if started_ms else clock()
        s = self.settings
        self.timeline = Timeline(boot, s.autostop_idle_minutes * 60, s.autostop_warn_seconds,
                                 s.autostop_grace_seconds, self.actions, busy_window=2 * s.autostop_poll_seconds,
                                 max_wait=s.autostop_max_upload_wait_minutes * 60)
        self.gpu = sig.GpuSampler(s.autostop_gpu_util_percent, s.autostop_gpu_memory_counts)
        self.services = active(ctx)
        self.secrets = secrets_of(ctx.config)
        self.fired_at: float | None = None
        self.last_error = ""
        self.cpu = sig.ContainerCpu(s.autostop_cpu_percent) if s.autostop_cpu_percent else None

    def _used(self, name: str, last: Callable[[PodContext], LastUse]) -> sig.Signal:
        use = last(self.ctx)
        return sig.Signal(name, use.at, use.words)

    def signals(self) -> list[sig.Signal]:
        s = self.settings
        found = [sig.probe("gpu", self.gpu)]
        found += [sig.probe(svc.name, partial(self._used, svc.name, activity.last))
                  for svc, activity in offering(self.services, Activity) if activity.last is not None]
        if (beat := s.autostop_heartbeat_file) is not None:
            found.append(sig.probe("heartbeat", lambda: sig.heartbeat("heartbeat", beat)))
        if s.autostop_busy_processes:
            found.append(sig.probe("processes", lambda: sig.busy_processes(s.autostop_busy_processes)))
        busy_services = [svc.name for svc, activity in offering(self.services, Activity) if activity.while_running]
        if busy_services:
            found.append(sig.probe("services", lambda: sig.running_services(self.ctx, busy_services)))
        if self.cpu is not None:
            found.append(sig.probe("cpu", self.cpu))
        return found

    def blockers(self) -> list[str]:
        return stop_reasons(self.ctx, self.services, "blocker")

    def lost(self) -> list[str]:
        return stop_reasons(self.ctx, self.services, "loss")

    def step(self) -> Decision:
        now = self.clock()
        decision = self.timeline.evaluate(now, self.signals(), self.blockers(), self.lost)
        if decision.state == "busy":
            self.fired_at = None
        if decision.state == "warning":
            self.warn(decision.message)
        if decision.state == "stop" and (self.fired_at is None or now - self.fired_at > RETRY_FAILED_STOP_SECONDS):
            self.fired_at = now
            self.publish(decision)
            self.stop(decision)
        self.publish(decision)
        return decision

    def warn(self, message: str) -> None:
        log.warning("autostop: %s", message)
        if shutil.which("wall"):
            subprocess.run(["wall", f"podvisor: {message}"], capture_output=True, timeout=10)

    def stop(self, decision: Decision) -> None:
        log.warning("autostop: %s", decision.message)
        try:
            used = Actions(self.ctx, self.settings, alive_for=time.sleep).run(self.actions)
            self.last_error = ""
            log.warning("autostop: stop action %s done", used)
        except Exception as exc:
            self.last_error = redact(str(exc), self.secrets)
            log.error("autostop: every stop action failed: %s; trying again in %d s", self.last_error,
                      RETRY_FAILED_STOP_SECONDS)

    def publish(self, decision: Decision) -> None:
        path = decision_path(self.ctx)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"state": decision.state, "message": decision.message, "idle_seconds": round(decision.idle_seconds),
                "stops_in": None if decision.stops_in is None else round(decision.stops_in),
                "actions": self.actions, "last_error": self.last_error or None, "evaluated_epoch": self.clock(),
                "signals": [{"name": s.name, "active_at": s.active_at, "reason": s.reason, "failed": s.failed}
                            for s in decision.signals]}
        write_atomically(path, json.dumps(data, indent=1))

    def run(self) -> None:
        log.info("autostop: idle %.1f min + warning %.0f s, grace %.0f s, actions %s",
                 self.settings.autostop_idle_minutes, self.settings.autostop_warn_seconds,
                 self.settings.autostop_grace_seconds, ", ".join(self.actions))
        last_state, said = "", set()
        while True:
            decision = self.step()
            if decision.state != last_state:
                (log.error if decision.state == "stuck" else log.info)("autostop: %s", decision.message)
                last_state = decision.state
            for name, warning in decision.warnings.items():
                if name not in said:  # once per probe going bad, not at every poll
                    log.warning("autostop: %s", warning)
            said = set(decision.warnings)
            time.sleep(self.settings.autostop_poll_seconds)


def main() -> None:
    from entrypoint import logs
    from entrypoint.context import current

    ctx = current()
    logs.configure(ctx.core.podvisor_log_level, stream=sys.stderr)
    Monitor(ctx).run()
