"""Checkpoint names and their order: "latest" follows the run's step numbering, not the alphabet
(step_900 comes before step_1000; checkpoint-500 before checkpoint-1500)."""
from __future__ import annotations

import re

_NUMBER = re.compile(r"(\d+)")


def step_of(name: str) -> int | None:
    """The step a checkpoint name carries: its last number (`step_500`, `model-12.pt`, `epoch2-step800`)."""
    stem = re.sub(r"\.(pt|pth|safetensors|bin|ckpt|npz|npy|pkl)$", "", name)
    numbers = _NUMBER.findall(stem)
    return int(numbers[-1]) if numbers else None


def newest_first(names: list[str]) -> list[str]:
    """Names with a step, highest step first; names without one come last, in reverse name order."""
    return sorted(names, key=lambda n: (step_of(n) is not None, step_of(n) or 0, n), reverse=True)
