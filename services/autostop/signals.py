"""Signals of activity. Each says when it last saw activity (`active_at`, epoch seconds) and why, in words.
A probe that fails counts as activity: a wrong stop costs a user their work, a few idle minutes do not."""
from __future__ import annotations

import os
import re
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import psutil

from entrypoint.context import PodContext
from entrypoint.state_dir import UP


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


CGROUP = Path("/sys/fs/cgroup")


class ContainerCpu:
    """CPU used by this container, from its cgroup (v2 `cpu.stat`, else v1 `cpuacct.usage`), as a share of the
    CPUs it may use (its quota, else its CPU set). A shared RunPod or Vast host runs other tenants: host-wide
    CPU would count their work as ours and keep the pod busy forever. Outside a container the cgroup is the
    machine's root one, which is right for a bare host too."""

    def __init__(self, threshold: float, root: Path = CGROUP, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold, self.root, self.clock = threshold, root, clock
        self.cpus = self._cpus()
        self.last = (clock(), self._used())

    def _used(self) -> float:
        """CPU seconds this cgroup has used."""
        stat = self.root / "cpu.stat"
        if stat.exists():
            fields = dict(line.split() for line in stat.read_text().splitlines() if line.count(" ") == 1)
            return int(fields["usage_usec"]) / 1e6
        for folder in ("cpuacct", "cpu,cpuacct", "cpuacct,cpu"):
            usage = self.root / folder / "cpuacct.usage"
            if usage.exists():
                return int(usage.read_text()) / 1e9
        times = psutil.cpu_times()  # no cgroup accounting at all: the machine's busy time is the best there is
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def _cpus(self) -> float:
        limit = self.root / "cpu.max"
        quota, period = (limit.read_text().split() + ["100000"])[:2] if limit.exists() else ("max", "100000")
        for folder in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
            v1 = self.root / folder / "cpu.cfs_quota_us"
            if quota == "max" and v1.exists() and int(v1.read_text()) > 0:
                quota, period = v1.read_text().strip(), (v1.parent / "cpu.cfs_period_us").read_text().strip()
        allowed = float(len(os.sched_getaffinity(0)))
        return min(allowed, int(quota) / int(period)) if quota != "max" else allowed

    def __call__(self) -> Signal:
        now, used = self.clock(), self._used()
        (then, before), self.last = self.last, (now, used)
        percent = 100.0 * (used - before) / max(now - then, 1e-6) / self.cpus
        reason = f"container cpu {percent:.0f} % of {self.cpus:g} CPU(s)"
        return Signal("cpu", time.time() if percent > self.threshold else None, reason)


def running_services(ctx: PodContext, names: list[str]) -> Signal:

    states = {p["name"]: p["statename"] for p in ctx.paths.supervisor().supervisor.getAllProcessInfo()}
    running = [n for n in names if states.get(n) in UP]
    if running:
        return Signal("services", time.time(), f"{', '.join(running)} running")
    return Signal("services", None, "no job running")
