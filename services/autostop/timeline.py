"""The idle timeline, kept free of I/O so it can be driven by a controllable clock:
grace after boot -> idle -> warning (AUTOSTOP_IDLE_MINUTES) -> stop (AUTOSTOP_WARN_SECONDS later), held
while anything blocks a stop (uploads pending). Activity at any point resets the timer."""
from __future__ import annotations

from dataclasses import dataclass, field

from services.autostop.signals import Signal


@dataclass
class Decision:
    state: str
    """grace | busy | idle | warning | waiting | stop"""
    message: str
    idle_seconds: float = 0.0
    stops_in: float | None = None
    signals: list[Signal] = field(default_factory=list)


class Timeline:
    def __init__(self, boot: float, idle_seconds: float, warn_seconds: float, grace_seconds: float,
                 action_names: list[str], busy_window: float) -> None:
        self.boot, self.idle_limit, self.warn, self.grace = boot, idle_seconds, warn_seconds, grace_seconds
        self.actions = ", ".join(action_names)
        self.busy_window = busy_window
        self.last_activity = boot
        self.warned = False

    def evaluate(self, now: float, signals: list[Signal], blockers: list[str]) -> Decision:
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
            return Decision("waiting", f"{minutes}: {'; '.join(blockers)} before stopping", idle, 0.0, signals)
        return Decision("stop", f"{minutes}: stopping now ({self.actions})", idle, 0.0, signals)
