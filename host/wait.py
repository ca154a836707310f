"""Launch-and-wait: a pod is ready when the provider says it runs, its SSH answers, and `podvisor status --ready`
run there says every interactive service answers; until then one progress line says which of these is missing."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

from host.pods import Pod, Provider
from host.ssh import SSH_FAILED, Target

STATUS_COMMAND = "podvisor status --json --ready"


class NotReady(Exception):
    pass


@dataclass
class Ready:
    pod: Pod
    target: Target
    report: dict


def target_of(pod: Pod, known_hosts: Path, identity: Path | None, user: str = "root") -> Target | None:
    """Where to SSH to the pod: its public address and mapped port 22, once the provider reports them."""
    if not (pod.ssh_host and pod.ssh_port):
        return None
    return Target(pod.ssh_host, pod.ssh_port, known_hosts, identity, user)


def probe(target: Target) -> tuple[bool, str, dict]:
    """(ready, what is missing, the pod's status report) from one `podvisor status` over SSH."""
    result = target.run(STATUS_COMMAND, timeout=30)
    if result.returncode == SSH_FAILED:
        reason = (result.stderr.strip().splitlines() or ["no answer"])[-1]
        return False, f"SSH {target.address}: {reason}", {}
    try:
        report = json.loads(result.stdout)
    except ValueError:
        why = result.stderr.strip()[-200:] or result.returncode
        return False, f"SSH answers, `podvisor status` does not ({why})", {}
    waiting = [name for name, s in report.get("services", {}).items()
               if s.get("interactive") and s.get("state") not in ("DISABLED", "FATAL") and not s.get("ready")]
    if result.returncode == 0:
        return True, "ready", report
    return False, "SSH answers; waiting for " + (", ".join(waiting) or "the stack"), report


def wait_until_ready(provider: Provider, pod_id: str, target_for: Callable[[Pod], Target | None], timeout: float,
                     interval: float = 5, say: Callable[[str], None] | None = None) -> Ready:
    say = say or Progress().update
    start = time.monotonic()
    state = "asking the provider"
    while True:
        pod = provider.pod(pod_id)
        target = target_for(pod)
        if pod.gone:
            raise NotReady(f"pod {pod_id} is {pod.status}: it will not come up; `podvisor cloud status {pod_id}`")
        if pod.running and pod.unreachable:
            raise NotReady(pod.unreachable)  # said now, not after the whole timeout while it bills
        if not pod.running or target is None:
            state = f"{pod.status.lower()}, " + ("no SSH address yet" if target is None else f"SSH at {target.address}")
        else:
            ready, state, report = probe(target)
            if ready:
                say(f"ready after {time.monotonic() - start:.0f} s")
                return Ready(pod, target, report)
        elapsed = time.monotonic() - start
        say(f"{pod_id}: {state} ({elapsed:.0f} s)")
        if elapsed + interval > timeout:
            raise NotReady(f"pod {pod_id} not ready after {timeout:.0f} s; last seen: {state}. The pod keeps running "
                           f"(and billing): `podvisor cloud logs {pod_id}` shows its log once SSH answers, the "
                           f"provider's console shows the container log before that; `podvisor cloud stop {pod_id}` "
                           "stops it")
        time.sleep(interval)


class Progress:
    """One line that rewrites itself on a terminal and prints each change once elsewhere (CI logs)."""

    def __init__(self) -> None:
        self.last = ""

    def update(self, text: str) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(f"\r\033[K{text}")
            if text.startswith("ready"):
                sys.stderr.write("\n")
        elif text.split(" (")[0] != self.last.split(" (")[0]:
            print(text, file=sys.stderr)
        self.last = text
