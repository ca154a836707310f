"""Restore on boot: a fresh pod (or one whose disk was wiped) gets the latest checkpoint back before the job
starts, from the first destination that has one, in the order given."""
from __future__ import annotations

import fcntl
import logging
import shutil
import time
from pathlib import Path

from entrypoint.context import PodContext
from services.uploader.destinations import Destination, file_hash, parse
from services.uploader.queue import Queue
from entrypoint.steps import newest_first, step_of
from services.uploader.uploader import queue_path, remote_name

log = logging.getLogger("podvisor")


def has_checkpoint(root: Path) -> bool:
    return root.is_dir() and any(step_of(p.name) is not None and not p.name.startswith(".") for p in root.iterdir())


def restore(ctx: PodContext, force: bool = False) -> str | None:
    """Fetch the highest-step checkpoint into the first watch dir; returns its name, or None. The uploader
    (at its start) and the job (before its first attempt) may both ask: a lock makes the second wait for the
    first, then find the checkpoint there."""
    lock = ctx.service_dir("uploader") / "restore.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        return _restore(ctx, force)


def _restore(ctx: PodContext, force: bool) -> str | None:
    settings = ctx.section("uploader")
    roots = list(settings.upload_watch_dirs)  # type: ignore[attr-defined]
    root = roots[0]
    if has_checkpoint(root) and not force:
        log.info("restore: %s already holds a checkpoint; nothing to fetch", root)
        return None
    for uri in settings.upload_destinations:  # type: ignore[attr-defined]
        dest = parse(uri)
        try:
            names = [n for n in dest.list_units() if step_of(n) is not None]
        except Exception as exc:
            log.warning("restore: cannot list %s (%s); trying the next destination", uri, type(exc).__name__)
            continue
        if not names:
            continue
        latest = newest_first(names)[0]
        _fetch(dest, latest, root, roots, Queue(queue_path(ctx)))
        return latest
    log.info("restore: no destination holds a checkpoint yet")
    return None


def _fetch(dest: Destination, unit: str, root: Path, roots: list[Path], queue: Queue) -> None:
    """Download into a hidden staging folder (ignored by the watcher), then move into place in one rename."""
    started = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    staging = root / ".podvisor-restore"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    log.info("restore: fetching %s from %s ...", unit, dest.uri)
    dest.download(unit, staging)
    target = root / unit
    (staging / unit).rename(target)
    shutil.rmtree(staging, ignore_errors=True)
    files = [target] if target.is_file() else [p for p in target.rglob("*") if p.is_file()]
    total = 0
    for path in files:
        size, sha256 = file_hash(path)
        total += size
        remote = remote_name(roots, root, path)
        # Already at this destination: recorded as durable there, so it is not sent back.
        queue.enqueue(dest.uri, str(root), unit, remote, str(path), size, path.stat().st_mtime_ns, sha256)
        rows = [r for r in queue.pending(dest.uri) if r.remote == remote and r.sha256 == sha256]
        queue.mark([r.id for r in rows], "durable")
    took = time.monotonic() - started
    log.info("restore: %s restored (%d file(s), %.1f MB) in %.1f s", unit, len(files), total / 1e6, took)
