"""What a checkpoint is on disk: a top-level entry of a watch dir (a folder such as `checkpoint-500/`, or a
single file such as `step_100.pt`), and which of its files the include and exclude rules take. Plain file
listing, no watching: the scanner, the status summary and `podvisor upload now` share it."""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

Snapshot = dict[str, tuple[int, int]]
"""{path: (size, mtime_ns)} of a checkpoint's files."""


@dataclass(frozen=True)
class Rules:
    include: list[str]
    exclude: list[str]
    sentinel: str = ""

    def excluded(self, name: str) -> bool:
        return any(fnmatch.fnmatch(name, pattern) for pattern in self.exclude)

    def wanted(self, path: Path, root: Path) -> bool:
        parts = path.relative_to(root).parts
        if any(self.excluded(part) for part in parts):
            return False
        return any(fnmatch.fnmatch(path.name, pattern) for pattern in self.include)


def unit_of(path: Path, roots: list[Path]) -> tuple[Path, str] | None:
    for root in roots:
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        return (root, rel.parts[0]) if rel.parts else None
    return None


def unit_files(root: Path, unit: str, rules: Rules) -> Snapshot:
    top = root / unit
    if rules.excluded(unit):
        return {}
    paths = [top] if top.is_file() else [p for p in _below(top) if p.is_file()]
    snapshot = {}
    for path in paths:
        if rules.wanted(path, root):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            snapshot[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return snapshot


def _below(top: Path) -> list[Path]:
    """Every path below `top`. A folder deleted meanwhile (a trainer pruning old checkpoints) is skipped:
    os.walk ignores what vanishes, where Path.rglob raises and would take the uploader down."""
    return [Path(folder) / name for folder, _, names in os.walk(top) for name in names]
