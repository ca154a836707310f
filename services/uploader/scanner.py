"""Finding complete checkpoints: watchdog events (inotify, or polling for network filesystems) mark where to
look, a periodic rescan catches what happened while nobody watched, and a checkpoint counts as complete only
when its files are closed and unchanged for UPLOAD_SETTLE_SECONDS (and its sentinel file is there). What a
checkpoint is on disk is said in `units`.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable

from watchdog.events import (DirCreatedEvent, DirDeletedEvent, DirMovedEvent, FileAttribEvent, FileClosedEvent,
                             FileCreatedEvent, FileDeletedEvent, FileModifiedEvent, FileMovedEvent, FileSystemEvent,
                             FileSystemEventHandler)
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from services.uploader.frameworks import waiting_for
from services.uploader.units import Rules, Snapshot, takes, unit_files, unit_of

log = logging.getLogger("uploader")
CHANGES = [FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileAttribEvent, FileMovedEvent, FileDeletedEvent,
           DirCreatedEvent, DirMovedEvent, DirDeletedEvent]
"""The events that can change a checkpoint. Opens and reads are left out: the uploader's own hashing and
transfers read every file, and each read would otherwise send the scanner over the whole checkpoint again."""


@dataclass
class Candidate:
    root: Path
    unit: str
    snapshot: Snapshot = field(default_factory=dict)
    changed_at: float = 0.0
    waiting: str = ""
    """What its framework's rule still waits for (trainer_state.json ...), once it is quiet."""


def open_for_writing(paths: set[str]) -> set[str]:
    """Which of `paths` some process holds open for writing (from /proc: an fd's flags)."""
    busy: set[str] = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
                if target not in paths:
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    flags = next(int(line.split()[1], 8) for line in info if line.startswith("flags:"))
            except (OSError, StopIteration, ValueError):
                continue
            if flags & (os.O_WRONLY | os.O_RDWR):
                busy.add(target)
    return busy


class Scanner:
    """Yields complete checkpoints; `poll()` is called by the uploader's loop."""

    def __init__(self, roots: list[Path], rules: Rules, settle: float, rescan: float, polling: bool,
                 known: Callable[[Snapshot], bool] = lambda snapshot: False, frameworks: bool = True,
                 written: Callable[[str], None] = lambda path: None) -> None:
        self.roots, self.rules, self.settle, self.rescan_every = roots, rules, settle, rescan
        self.known, self.frameworks = known, frameworks
        self.on_written = written
        """Told of each wanted file as soon as it is written (closed after writing, renamed into place, or found
        already quiet), before its checkpoint is complete: the uploader hashes it then."""
        self.vanished: list[tuple[Path, str, int]] = []
        """Checkpoints seen being written and deleted before they were complete: (watch dir, name, files)."""
        self.candidates: dict[tuple[Path, str], Candidate] = {}
        self.dirty: dict[tuple[Path, str], float] = {}
        """Checkpoints with news since the last poll, and when the newest event came."""
        self.lock = threading.Lock()
        self.last_rescan = 0.0
        self.rescans = 0
        """Full rescans of the watch dirs so far: status shows it, so a check that nothing more is sent can wait
        for rescans to have happened instead of for a time."""
        self.observer = PollingObserver(timeout=1) if polling else Observer()
        handler = _Handler(self)
        for root in roots:
            root.mkdir(parents=True, exist_ok=True)
            self.observer.schedule(handler, str(root), recursive=True, event_filter=CHANGES)

    def start(self) -> None:
        self.observer.start()

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(5)

    def touch(self, path: str) -> None:
        found = unit_of(Path(path), self.roots)
        if found:
            with self.lock:
                self.dirty[found] = time.monotonic()

    def written(self, path: str) -> None:
        found = unit_of(Path(path), self.roots)
        if found and takes(found[0], path, self.rules):
            self.on_written(path)

    def settling(self) -> int:
        """Checkpoints still being written (changed within the settle time)."""
        now = time.monotonic()
        return sum(1 for c in self.candidates.values() if now - c.changed_at < self.settle)

    def waiting(self) -> list[dict[str, str]]:
        """Quiet checkpoints their framework's rule still holds back: {"unit", "waiting_for"}."""
        return [{"unit": c.unit, "waiting_for": c.waiting} for c in self.candidates.values() if c.waiting]

    def again(self, root: Path, unit: str, snapshot: Snapshot) -> None:
        """A checkpoint yielded complete could not be queued as it was (a file changed or went meanwhile): watch
        it again from that snapshot, so it is queued once it settles, or reported if it vanishes."""
        with self.lock:
            self.candidates[(root, unit)] = Candidate(root, unit, snapshot, time.monotonic())
            self.dirty[(root, unit)] = time.monotonic()

    def take_vanished(self) -> list[tuple[Path, str, int]]:
        gone, self.vanished = self.vanished, []
        return gone

    def next_due(self) -> float:
        """Seconds until the next checkpoint being written will have been quiet for the settle time (inf if
        none), so the uploader's loop looks again exactly then, not a tick later. One already quiet but held
        (a file still open, no sentinel yet) is looked at on the loop's usual tick."""
        now = time.monotonic()
        return min((c.changed_at + self.settle - now for c in self.candidates.values()
                    if c.changed_at + self.settle > now), default=float("inf"))

    def poll(self, force_rescan: bool = False) -> list[tuple[Path, str, Snapshot]]:
        """Checkpoints that have just become complete: (watch dir, name, their files). The settle time counts
        from the newest event of a checkpoint, not from when this poll saw it."""
        now = time.monotonic()
        with self.lock:
            dirty, self.dirty = self.dirty, {}
        if force_rescan or now - self.last_rescan >= self.rescan_every:
            self.last_rescan = now
            self.rescans += 1
            for root in self.roots:
                for path in root.iterdir() if root.is_dir() else []:
                    dirty.setdefault((root, path.name), now)
        for key, changed_at in dirty.items():
            candidate = self.candidates.setdefault(key, Candidate(*key, changed_at=changed_at))
            snapshot = unit_files(*key, self.rules)
            if snapshot != candidate.snapshot:
                if candidate.snapshot and not snapshot and not (key[0] / key[1]).exists():
                    self.vanished.append((*key, len(candidate.snapshot)))
                quiet_since = time.time_ns() - int(self.settle * 1e9)  # written before that: no close event due
                for file, version in snapshot.items():
                    if version[1] < quiet_since and candidate.snapshot.get(file) != version:
                        self.on_written(file)
                candidate.snapshot, candidate.changed_at = snapshot, changed_at
            candidate.waiting = ""  # news in its folder: its framework's rule is asked again once it is quiet
            if self.known(snapshot):  # every file already queued or uploaded as it is now
                del self.candidates[key]
        complete = []
        for key, candidate in list(self.candidates.items()):
            if not candidate.snapshot:
                del self.candidates[key]
                continue
            if now - candidate.changed_at < self.settle or candidate.waiting:
                continue  # still being written, or quiet and held by its framework's rule until its folder changes
            if unit_files(*key, self.rules) != candidate.snapshot:  # changed without an event (NFS)
                candidate.snapshot, candidate.changed_at = unit_files(*key, self.rules), now
                continue
            if self.rules.sentinel and (candidate.root / candidate.unit).is_dir() and not (
                    candidate.root / candidate.unit / self.rules.sentinel).exists():
                continue
            candidate.waiting = (waiting_for(candidate.root / candidate.unit) if self.frameworks else None) or ""
            if candidate.waiting or open_for_writing(set(candidate.snapshot)):
                continue
            del self.candidates[key]
            complete.append((candidate.root, candidate.unit, candidate.snapshot))
        return complete


class _Handler(FileSystemEventHandler):
    def __init__(self, scanner: Scanner) -> None:
        self.scanner = scanner

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.scanner.touch(os.fsdecode(event.src_path))
        dest = getattr(event, "dest_path", "")
        if dest:
            self.scanner.touch(os.fsdecode(dest))
        if isinstance(event, FileClosedEvent):
            self.scanner.written(os.fsdecode(event.src_path))
        elif isinstance(event, FileMovedEvent):
            self.scanner.written(os.fsdecode(dest))
