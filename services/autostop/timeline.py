"""The idle timeline, kept free of I/O so it can be driven by a controllable clock:
grace after boot -> idle -> warning (AUTOSTOP_IDLE_MINUTES) -> stop (AUTOSTOP_WARN_SECONDS later), held
while anything blocks a stop (uploads pending), for at most AUTOSTOP_MAX_UPLOAD_WAIT_MINUTES: past that the stop
goes ahead only if nothing would be lost (every checkpoint is held by some destination); otherwise the pod stays
up and says so loudly. Activity at any point resets the timer."""
from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable

from services.autostop.signals import Signal


@dataclass
class Decision:
    state: str
    """grace | busy | idle | warning | warned | waiting | stuck | stop"""
    message: str
    idle_seconds: float = 0.0
    stops_in: float | None = None
    signals: list[Signal] = field(default_factory=list)
    warnings: dict[str, str] = field(default_factory=dict)
    """Probes that have failed for longer than the idle timeout: no longer counted as activity, said loudly."""


class Timeline:
    def __init__(self, boot: float, idle_seconds: float, warn_seconds: float, grace_seconds: float,
                 action_names: list[str], busy_window: float, max_wait: float = 0.0) -> None:
        self.boot, self.idle_limit, self.warn, self.grace = boot, idle_seconds, warn_seconds, grace_seconds
        self.actions = ", ".join(action_names)
        self.busy_window = busy_window
        self.max_wait = max_wait
        """Seconds a due stop waits on its blockers before looking at what stopping would lose (0: forever)."""
        self.last_activity = boot
        self.warned = False
        self.waiting_since: float | None = None
        self.failing_since: dict[str, float] = {}

    def evaluate(self, now: float, signals: list[Signal], blockers: list[str],
                 lost: Callable[[], list[str]] = list) -> Decision:
        """`lost` says what a stop right now would lose for good (asked only once the wait is over)."""
        signals, warnings = self._stale_failures(now, signals)
        decision = self._evaluate(now, signals, blockers, lost)
        if decision.state not in ("waiting", "stuck"):
            self.waiting_since = None
        decision.warnings = warnings
        if warnings:
            decision.message += "; WARNING: " + "; ".join(warnings.values())
        return decision

    def _stale_failures(self, now: float, signals: list[Signal]) -> tuple[list[Signal], dict[str, str]]:
        """A failed probe counts as activity (a passing error must not stop a busy pod), but one that has failed
        for longer than the idle timeout is broken, not busy: it stops counting, so it cannot hold the pod up
        forever, and it is reported."""
        kept: list[Signal] = []
        warnings: dict[str, str] = {}
        for signal in signals:
            if not signal.failed:
                self.failing_since.pop(signal.name, None)
                kept.append(signal)
                continue
            failing = now - self.failing_since.setdefault(signal.name, now)
            if failing <= self.idle_limit:
                kept.append(signal)
                continue
            warnings[signal.name] = (f"the {signal.name} probe has failed for {failing / 60:.0f} min "
                                     f"({signal.reason}); it no longer counts as activity")
            kept.append(Signal(signal.name, None, signal.reason, True))
        return kept, warnings

    def _evaluate(self, now: float, signals: list[Signal], blockers: list[str],
                  lost: Callable[[], list[str]]) -> Decision:
        for signal in signals:
            if signal.active_at is not None and signal.active_at > self.last_activity:
                self.last_activity = min(signal.active_at, now)
        busy = [s for s in signals if s.active_at is not None and now - s.active_at <= self.busy_window]
        idle = now - self.last_activity
        if busy:
            self.warned = False
            return Decision("busy", "busy: " + ", ".join(s.reason for s in busy), 0.0, None, signals)
        if self.warned and idle < self.idle_limit:
            self.warned = False  # activity came and went between two evaluations
        stop_at = max(self.last_activity + self.idle_limit + self.warn, self.boot + self.grace)
        stops_in = max(0.0, stop_at - now)
        minutes = f"idle {idle / 60:.0f} min"
        if now < self.boot + self.grace:
            return Decision("grace", f"{minutes}, boot grace: stops in {stops_in / 60:.0f} min at the earliest "
                                     f"({self.actions})", idle, stops_in, signals)
        if idle < self.idle_limit:
            return Decision("idle", f"{minutes}, stops in {stops_in / 60:.0f} min ({self.actions})", idle,
                            stops_in, signals)
        if stops_in > 0:
            first = not self.warned
            self.warned = True
            return Decision("warning" if first else "warned",
                            f"{minutes}: stopping in {stops_in:.0f} s ({self.actions}) unless there is activity",
                            idle, stops_in, signals)
        if blockers:
            self.waiting_since = now if self.waiting_since is None else self.waiting_since
            waited = now - self.waiting_since
            why = "; ".join(blockers)
            if not self.max_wait or waited < self.max_wait:
                return Decision("waiting", f"{minutes}: {why} before stopping", idle, 0.0, signals)
            at_risk = lost()
            if at_risk:
                return Decision("stuck", f"{minutes}: NOT STOPPING after {waited / 60:.0f} min: {why}, and a stop "
                                         f"would lose {'; '.join(at_risk)}. Fix the destination (see `podvisor "
                                         f"status`) or stop the pod yourself", idle, 0.0, signals)
            return Decision("stop", f"{minutes}: stopping after {waited / 60:.0f} min of waiting ({why}): every "
                                    f"checkpoint is held by at least one destination ({self.actions})", idle, 0.0,
                            signals)
        return Decision("stop", f"{minutes}: stopping now ({self.actions})", idle, 0.0, signals)
