"""Footprint: the resident memory of podvisor's own processes (what stays behind `podvisor start`, supervisord,
the event listener, the uploader, the autostop) after IDLE_SECONDS of an idle booted stack, without and with
Jupyter and the API; the floor is supervisord alone, measured in the same run. Goal (issue 27): <= 100 MB.

The services themselves (sshd, Jupyter, the API with its model) are listed apart: they are the user's, and
their memory is what the user asked for.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.ports import free_port
from bench.results import save

IDLE_SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", "30"))
GOAL_MB = 100.0
VENV_BIN = Path(sys.executable).parent
OWN = {"entrypoint.supervise": "start (resident)", "supervisord": "supervisord", "entrypoint.events": "event listener",
       "services.uploader": "uploader", "services.autostop": "autostop"}
"""How each of podvisor's own processes is told by its command line."""


def _rss_mb(proc: psutil.Process) -> float:
    return proc.memory_info().rss / 2**20


def _kind(proc: psutil.Process) -> str:
    line = " ".join(proc.cmdline())
    for mark, name in OWN.items():  # entrypoint.supervise first: supervisord's command line is in its own
        if mark in line:
            return name
    return "service: " + (proc.name() or "?")


def supervisord_alone(folder: Path) -> float:
    """The floor: supervisord with no program, as little as a supervisor can be."""
    conf = folder / "alone.conf"
    conf.write_text(f"[supervisord]\nnodaemon=true\nlogfile={folder / 'alone.log'}\npidfile={folder / 'alone.pid'}\n"
                    f"[unix_http_server]\nfile={folder / 'alone.sock'}\n")
    proc = subprocess.Popen([str(VENV_BIN / "supervisord"), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)
        return _rss_mb(psutil.Process(proc.pid))
    finally:
        proc.terminate()
        proc.wait(30)


def booted(folder: Path, services: bool) -> dict[str, float]:
    """{process kind: RSS MB} of a stack left idle for IDLE_SECONDS."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env.update(PODVISOR_STATE_DIR=str(folder / "state"), PODVISOR_PROVIDER="local", PODVISOR_BIND_HOST="127.0.0.1",
               PODVISOR_WORKSPACE=str(folder / "ws"), SSH_ENABLED="false", AUTOSTOP_ACTION="none",
               UPLOAD_WATCH_DIRS=str(folder / "ws" / "checkpoints"), UPLOAD_DESTINATIONS=f"file://{folder / 'dest'}",
               JUPYTER_ENABLED=str(services).lower(), INFERENCE_ENABLED=str(services).lower(),
               JUPYTER_PORT=str(free_port()), INFERENCE_PORT=str(free_port()),
               JUPYTER_ROOT_DIR=str(folder / "ws"), INFERENCE_MODEL_DIR=str(folder / "ws" / "models"))
    stack = subprocess.Popen([str(VENV_BIN / "podvisor"), "start"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        time.sleep(IDLE_SECONDS)
        found: dict[str, float] = {}
        root = psutil.Process(stack.pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                kind = _kind(proc)
                found[kind] = found.get(kind, 0.0) + _rss_mb(proc)
            except psutil.Error:
                continue
        return found
    finally:
        stack.send_signal(signal.SIGTERM)
        stack.wait(120)


def main() -> None:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="podvisor-footprint-") as tmp:
        floor = supervisord_alone(Path(tmp))
        for services in (False, True):
            folder = Path(tmp) / ("with" if services else "without")
            folder.mkdir()
            found = booted(folder, services)
            own = sum(mb for kind, mb in found.items() if not kind.startswith("service: "))
            label = "with Jupyter and the API" if services else "without Jupyter and the API"
            rows.append({"measure": f"podvisor's own processes, {label}", "floor_mb": round(floor, 1),
                         "value_mb": round(own, 1), "ratio": round(own / floor, 2), "goal_mb": GOAL_MB,
                         "processes": {k: round(v, 1) for k, v in sorted(found.items())}})
    print(f"\nFootprint after {IDLE_SECONDS:.0f} s idle (RSS; floor: supervisord alone)")
    print(f"  {'measure':<58} {'floor':>8} {'value':>9} {'ratio':>6} {'goal':>9}")
    for row in rows:
        print(f"  {row['measure']:<58} {row['floor_mb']:>6.1f}MB {row['value_mb']:>7.1f}MB {row['ratio']:>5.2f}x "
              f"{'<= ' + format(GOAL_MB, '.0f') + 'MB':>9}")
        for kind, mb in row["processes"].items():
            print(f"      {kind:<54} {mb:>15.1f}MB")
    save("footprint_bench", rows)


if __name__ == "__main__":
    main()
