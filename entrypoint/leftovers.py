"""Processes a run of this state dir left behind: after supervisord itself was killed (kill -9, an OOM kill), its
programs would live on, re-parented to PID 1, still holding ports and the upload queue, and a new start would
fight them (sshd FATAL on "address in use", two uploaders on one queue).

Each program is started with a parent-death signal, so most go when supervisord goes; this sweep catches what
is left (a job's training process in its own session, a program that ignored the signal) when supervisord ends
abnormally, and again before a start spawns anything. A process counts as ours when its environment names this
state dir and a podvisor program (PODVISOR_SERVICE, or PODVISOR_JOB_ATTEMPT for the job's children); a user's
SSH shell carries neither, so open sessions are left alone.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import psutil

log = logging.getLogger("podvisor")
MARKS = ("PODVISOR_SERVICE", "PODVISOR_JOB_ATTEMPT")


def find(state_dir: Path) -> list[psutil.Process]:
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for proc in psutil.process_iter():
        if proc.pid in mine:
            continue
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get("PODVISOR_STATE_DIR") == str(state_dir) and any(mark in env for mark in MARKS):
            found.append(proc)
    return found


def sweep(state_dir: Path, grace: float = 3.0) -> int:
    """SIGTERM every leftover of `state_dir`, SIGKILL what is still there after `grace`; returns how many."""
    found = find(state_dir)
    if not found:
        return 0
    log.warning("%d process(es) left from an earlier run of %s (%s): stopping them before going on", len(found),
                state_dir, ", ".join(f"{p.pid} {_name(p)}" for p in found[:8]))
    for proc in found:
        _signal(proc.terminate)
    _, alive = psutil.wait_procs(found, timeout=grace)
    for proc in alive:
        _signal(proc.kill)
    psutil.wait_procs(alive, timeout=grace)
    return len(found)


def _name(proc: psutil.Process) -> str:
    try:
        return proc.environ().get("PODVISOR_SERVICE") or proc.name()
    except (psutil.Error, OSError):
        return "?"


def _signal(send) -> None:
    try:
        send()
    except psutil.Error:
        pass
