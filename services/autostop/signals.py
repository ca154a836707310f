"""Signals of activity. Each says when it last saw activity (`active_at`, epoch seconds) and why, in words.
A probe that fails counts as activity: a wrong stop costs a user their work, a few idle minutes do not."""
from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil
import requests

from entrypoint.context import PodContext
from entrypoint.probes import local_host


@dataclass(frozen=True)
class Signal:
    name: str
    active_at: float | None
    """When activity was last seen; None: none seen."""
    reason: str
    failed: bool = False


def _failed(name: str, exc: Exception) -> Signal:
    return Signal(name, time.time(), f"{name} probe failed ({type(exc).__name__}), counted as activity", True)


def probe(name: str, check: Callable[[], Signal]) -> Signal:
    try:
        return check()
    except Exception as exc:
        return _failed(name, exc)


class GpuSampler:
    """Utilization averaged over a window of samples; memory held by an idle notebook is not activity."""

    def __init__(self, threshold: float, memory_counts: bool, window: int = 5) -> None:
        self.threshold, self.memory_counts = threshold, memory_counts
        self.samples: deque[list[tuple[float, float]]] = deque(maxlen=window)

    def __call__(self) -> Signal:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:
            return Signal("gpu", None, "no GPU (NVML unavailable)")
        try:
            sample = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                sample.append((float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                               100.0 * memory.used / max(memory.total, 1)))
        finally:
            pynvml.nvmlShutdown()
        self.samples.append(sample)
        busy = []
        for i in range(len(sample)):
            util = sum(s[i][0] for s in self.samples if i < len(s)) / len(self.samples)
            if util > self.threshold:
                busy.append(f"gpu{i} {util:.0f} %")
            elif self.memory_counts and sample[i][1] > 5:
                busy.append(f"gpu{i} memory {sample[i][1]:.0f} % held")
        if busy:
            return Signal("gpu", time.time(), ", ".join(busy))
        return Signal("gpu", None, f"{len(sample)} GPU(s) idle")


def ssh_sessions(port: int) -> Signal:
    sessions = [c for c in psutil.net_connections(kind="tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port]
    if sessions:
        return Signal("ssh", time.time(), f"{len(sessions)} ssh session(s)")
    return Signal("ssh", None, "no ssh session")


def jupyter(base: str, token: str | None) -> Signal:
    """Jupyter's own clock: /api/status last_activity covers kernels, terminals and browser API calls. Our
    polling passes no_track_activity, so it does not reset that clock itself."""
    headers = {"Authorization": f"token {token}"} if token else {}
    params = {"no_track_activity": "1"}
    status = requests.get(f"{base}api/status", headers=headers, params=params, timeout=5)
    status.raise_for_status()
    kernels = requests.get(f"{base}api/kernels", headers=headers, params=params, timeout=5)
    kernels.raise_for_status()
    busy = [k for k in kernels.json() if k.get("execution_state") == "busy"]
    if busy:
        return Signal("jupyter", time.time(), f"{len(busy)} jupyter kernel(s) busy")
    from datetime import datetime

    last = datetime.fromisoformat(status.json()["last_activity"].replace("Z", "+00:00")).timestamp()
    return Signal("jupyter", last, f"jupyter last active {time.time() - last:.0f} s ago")


def heartbeat(name: str, path: Path) -> Signal:
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return Signal(name, None, f"no {name} heartbeat yet")
    return Signal(name, mtime, f"{name} heartbeat {time.time() - mtime:.0f} s ago")


def busy_processes(pattern: str) -> Signal:
    regex, me = re.compile(pattern), psutil.Process().pid
    matches = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["pid"] != me and cmdline and regex.search(cmdline):
            matches.append(f"{proc.info['pid']}")
    if matches:
        return Signal("processes", time.time(), f"{len(matches)} busy process(es) (pid {', '.join(matches[:3])})")
    return Signal("processes", None, "no busy process")


def cpu(threshold: float) -> Signal:
    percent = psutil.cpu_percent(interval=None)  # since the previous call: one poll period
    if percent > threshold:
        return Signal("cpu", time.time(), f"cpu {percent:.0f} %")
    return Signal("cpu", None, f"cpu {percent:.0f} %")


def running_services(ctx: PodContext, names: list[str]) -> Signal:
    from entrypoint.status import supervisor_proxy

    states = {p["name"]: p["statename"] for p in supervisor_proxy(ctx).supervisor.getAllProcessInfo()}
    running = [n for n in names if states.get(n) in ("RUNNING", "STARTING", "BACKOFF")]
    if running:
        return Signal("services", time.time(), f"{', '.join(running)} running")
    return Signal("services", None, "no job running")


def jupyter_base(ctx: PodContext) -> tuple[str, str | None]:
    settings = ctx.section("jupyter")
    host = local_host(ctx.core.podvisor_bind_host)
    return (f"http://{host}:{settings.jupyter_port}{settings.jupyter_base_url}",  # type: ignore[attr-defined]
            settings.token())  # type: ignore[attr-defined]
