"""The one retry policy of podvisor's own loops: waits that double from `first` up to `cap`, drawn with jitter
so that pods which failed together do not try again together.

HTTP calls retry inside urllib3's Retry (`provider_http.session`). Everything else that tries again asks this
for how long to wait: an upload to a destination that failed, a restore held by an unreachable destination,
the training job's next attempt, sshd started again after it was given up on.
"""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    first: float
    """The wait after the first failure."""
    cap: float
    """No wait is longer than this."""
    jitter: float = 0.0
    """The wait is drawn between (1 - jitter) and 1 times the doubled value."""

    def delay(self, failures: int) -> float:
        """The wait before the next try, after `failures` (1, 2, ...) failures in a row."""
        base = min(self.cap, self.first * 2.0 ** max(0, failures - 1))
        return base * random.uniform(1.0 - self.jitter, 1.0) if self.jitter else base
