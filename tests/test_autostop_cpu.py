"""Idle CPU is this container's own: read from its cgroup (v2 cpu.stat, v1 cpuacct.usage) against its CPU quota,
never the host-wide figure that other tenants of a shared RunPod/Vast host drive."""
from __future__ import annotations

import os
import time

import pytest

from services.autostop.signals import ContainerCpu


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _v2(root, used_usec: int, cpu_max: str) -> None:
    (root / "cpu.stat").write_text(f"usage_usec {used_usec}\nuser_usec {used_usec}\nsystem_usec 0\nnr_periods 0\n")
    (root / "cpu.max").write_text(cpu_max + "\n")


def test_cgroup_v2_usage_against_the_quota(tmp_path):
    clock = Clock()
    _v2(tmp_path, 5_000_000, "200000 100000")  # two CPUs' worth of quota
    cpu = ContainerCpu(60, root=tmp_path, clock=clock)
    assert cpu.cpus == min(2.0, len(os.sched_getaffinity(0)))
    clock.now += 10
    _v2(tmp_path, 5_000_000 + int(10 * cpu.cpus * 0.7 * 1e6), "200000 100000")
    busy = cpu()
    assert busy.active_at is not None and "container cpu 70 %" in busy.reason
    clock.now += 10
    _v2(tmp_path, 5_000_000 + int(10 * cpu.cpus * 0.7 * 1e6) + 100_000, "200000 100000")
    quiet = cpu()
    assert quiet.active_at is None and float(quiet.reason.split()[2]) < 2


def test_cgroup_v1_cpuacct_and_cfs_quota(tmp_path):
    clock = Clock()
    (tmp_path / "cpuacct").mkdir()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpuacct" / "cpuacct.usage").write_text("0\n")
    cpu = ContainerCpu(60, root=tmp_path, clock=clock)
    assert cpu.cpus == 1.0
    clock.now += 4
    (tmp_path / "cpuacct" / "cpuacct.usage").write_text(f"{int(3.6e9)}\n")
    assert cpu().reason == "container cpu 90 % of 1 CPU(s)"


def test_this_machine_reads_its_own_accounting_and_sees_a_busy_loop():
    """The real /sys/fs/cgroup of whatever runs the tests: a second of spinning shows as CPU used."""
    cpu = ContainerCpu(1)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        pass
    signal = cpu()
    percent = float(signal.reason.split()[2])
    assert percent >= 100 / cpu.cpus * 0.5, signal.reason


@pytest.mark.parametrize("quota", ["max 100000"])
def test_no_quota_means_the_cpus_it_may_run_on(tmp_path, quota):
    _v2(tmp_path, 0, quota)
    assert ContainerCpu(60, root=tmp_path, clock=Clock()).cpus == len(os.sched_getaffinity(0))
