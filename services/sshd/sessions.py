"""Which SSH sessions mean a person at work, for the idle autostop.

A TCP connection is not a session: internet scanners open and hold connections to any public SSH port, and
counting them kept pods billing forever. A session is what OpenSSH creates once a login has succeeded: a
process titled `sshd: user@pts/0` (or `user@notty` for `ssh host command`, VS Code, port forwards) under this
stack's sshd. An open session counts while its user types (its tty's input clock, as `w` shows) or a program
it started works (CPU time that grows between polls); once neither for AUTOSTOP_SSH_IDLE_MINUTES, a session left
open for days stops counting, and the pod's idle clock runs from its last input or work.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

import psutil

from entrypoint.registry import LastUse

TITLE = re.compile(r"^sshd(?:-session)?: (\S+)@(\S+)")
"""The title OpenSSH gives an authenticated session's process (sshd-session since OpenSSH 9.8)."""


@dataclass
class Session:
    pid: int
    who: str
    """`user@pts/0`, as `w` and sshd's own title say it."""
    last: float
    """The last input on its tty, or work by a program it started, or its start (epoch seconds)."""


class SessionClock:
    """Remembers each session's CPU total between polls: growth means a program it started is working."""

    def __init__(self) -> None:
        self.cpu: dict[int, tuple[float, float]] = {}
        """pid -> (its programs' CPU seconds when last seen, when that total last changed)."""

    def sessions(self, config: str, now: float) -> list[Session]:
        """Authenticated sessions of the sshd started with `config` (its `-f` file), oldest first."""
        found = []
        for proc in psutil.process_iter(["pid", "cmdline", "create_time"]):
            title = TITLE.match(" ".join(proc.info["cmdline"] or []))
            if not title or not self._served_by(proc, config):
                continue
            last = max(proc.info["create_time"], self._input(title.group(2)), self._work(proc, now))
            found.append(Session(proc.pid, title.group(0).split(": ", 1)[1], last))
        self.cpu = {pid: seen for pid, seen in self.cpu.items() if any(s.pid == pid for s in found)}
        return sorted(found, key=lambda s: s.pid)

    @staticmethod
    def _served_by(proc: psutil.Process, config: str) -> bool:
        """The session's privileged monitor, then the listening sshd with our config: not the host's sshd."""
        try:
            return any(config in parent.cmdline() for parent in proc.parents()[:3])
        except psutil.Error:
            return False

    @staticmethod
    def _input(tty: str) -> float:
        """When the user last typed: the tty's access time (0 for `notty`)."""
        if not re.fullmatch(r"pts/\d+", tty):
            return 0.0
        try:
            return os.stat(f"/dev/{tty}").st_atime
        except OSError:
            return 0.0

    def _work(self, proc: psutil.Process, now: float) -> float:
        """When a program of the session last used CPU, as far as polls can tell (0 when never seen to)."""
        total = 0.0
        for child in proc.children(recursive=True):
            try:
                times = child.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
            except psutil.Error:
                continue
        before, changed = self.cpu.get(proc.pid, (total, 0.0))
        if total != before:
            changed = now
        self.cpu[proc.pid] = (total, changed)
        return changed


def describe(sessions: list[Session], idle_limit: float, now: float | None = None) -> LastUse:
    """The autostop's signal: now while some session is in use (input or work within `idle_limit` seconds),
    else the last time any was; in words, which sessions and how long since each was used."""
    now = time.time() if now is None else now
    if not sessions:
        return LastUse(None, "no ssh session")
    used = [s for s in sessions if now - s.last < idle_limit]
    if used:
        return LastUse(now, f"{len(used)} ssh session(s) in use: " + ", ".join(
            f"{s.who} (used {now - s.last:.0f} s ago)" for s in used))
    return LastUse(max(s.last for s in sessions), (
        f"{len(sessions)} ssh session(s) open but idle over {idle_limit / 60:g} min: "
        + ", ".join(f"{s.who} (used {now - s.last:.0f} s ago)" for s in sessions)))
