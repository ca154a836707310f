"""Restore on boot: a fresh pod (or one whose disk was wiped) gets its newest committed checkpoint back
before the job starts. Only a checkpoint whose commit marker exists is a candidate; every file is verified
against the marker, and a checkpoint that fails is skipped for the next older one. A destination that
cannot be listed is unreachable, never empty: when none answers, the job is held rather than started from
step 0 (RESTORE_REQUIRED)."""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field
from pathlib import Path

from entrypoint.context import PodContext
from entrypoint.files import write_atomically
from entrypoint.registry import RestoreState
from entrypoint.steps import step_of
from services.uploader.destinations import Destination, VerifyError, file_hash, parse
from services.uploader.layout import (RESTORE_STAGING, marker_name, queue_path, restore_lock_path, restore_state_path,
                                      root_prefix, unit_of_marker)
from services.uploader.marker import Marker
from services.uploader.queue import Item, Queue
from services.uploader.settings import UploadSettings

log = logging.getLogger("podvisor")


@dataclass
class Outcome:
    state: RestoreState
    """local: a checkpoint is already here; unreachable: and not required"""
    detail: str
    checkpoint: str | None = None
    source: str | None = None
    at_epoch: float = field(default_factory=time.time)
    skipped: list[dict[str, str]] = field(default_factory=list)
    """Newer committed checkpoints passed over, each with where and why: {"checkpoint", "source", "reason"}."""


def has_checkpoint(root: Path) -> bool:
    return root.is_dir() and any(step_of(p.name) is not None and not p.name.startswith(".") for p in root.iterdir())


def restore(ctx: PodContext, force: bool = False, dests: list[Destination] | None = None) -> Outcome:
    """Fetch the newest intact committed checkpoint into the first watch dir. The uploader (at its start)
    and the job (before its first attempt) may both ask: a lock makes the second wait for the first, then
    find the checkpoint there."""
    lock = restore_lock_path(ctx)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        outcome = _restore(ctx, force, dests)
        # "a checkpoint is here already" is no news: it never hides what the restore that brought it said
        if outcome.state != "local" or not restore_state_path(ctx).exists():
            write_atomically(restore_state_path(ctx), json.dumps(asdict(outcome), indent=1))
    return outcome


def _restore(ctx: PodContext, force: bool, dests: list[Destination] | None) -> Outcome:
    settings = ctx.settings(UploadSettings)
    roots = list(settings.upload_watch_dirs)
    root, prefix = roots[0], root_prefix(roots, roots[0])
    if has_checkpoint(root) and not force:
        log.info("restore: %s already holds a checkpoint; nothing to fetch", root)
        return Outcome("local", f"{root} already holds a checkpoint")
    dests = dests or [parse(uri, hf_private=settings.upload_hf_private) for uri in settings.upload_destinations]
    committed, unreachable = _listings(dests, prefix, settings.restore_timeout_seconds)
    for name, why in unreachable.items():
        log.warning("restore: %s cannot be listed (%s): it is unreachable, not empty", name, why)
    order = {dest.uri: i for i, dest in enumerate(dests)}
    candidates = sorted(((unit, dest) for dest, units in committed for unit in units),
                        key=lambda c: (-(step_of(c[0]) or 0), order[c[1].uri]))
    queue = Queue(queue_path(ctx))
    skipped: list[dict[str, str]] = []
    for unit, dest in candidates:
        try:
            outcome = _fetch(dest, prefix, unit, root, queue, settings.restore_timeout_seconds, force)
        except Exception as exc:
            reason = str(exc)[:300] or type(exc).__name__
            skipped.append({"checkpoint": unit, "source": dest.uri, "reason": reason})
            log.warning("restore: %s at %s is not usable (%s); trying the next older committed checkpoint",
                        unit, dest.uri, reason)
            continue
        if skipped:
            outcome.detail += "; skipped " + ", ".join(f"{s['checkpoint']} at {s['source']} ({s['reason'][:120]})"
                                                       for s in skipped)
        outcome.skipped = skipped
        return outcome
    tried = f" ({len(candidates)} committed checkpoint(s) failed verification)" if candidates else ""
    if unreachable:
        names = ", ".join(unreachable)
        if settings.restore_required:
            detail = (f"no destination could be checked for a checkpoint ({names} unreachable){tried}; the job is "
                      "held so it does not start from step 0 and overwrite one; retrying until a destination "
                      "answers (RESTORE_REQUIRED=false starts it anyway)")
            log.error("restore: %s", detail)
            return Outcome("held", detail, skipped=skipped)
        return Outcome("unreachable", f"{names} unreachable{tried}; RESTORE_REQUIRED=false, starting without",
                       skipped=skipped)
    detail = f"no destination holds a committed checkpoint yet{tried}"
    log.info("restore: %s", detail)
    return Outcome("empty", detail, skipped=skipped)


def _listings(dests: list[Destination], prefix: str, timeout: float
              ) -> tuple[list[tuple[Destination, list[str]]], dict[str, str]]:
    """The committed checkpoints of this watch dir at each destination, listed in parallel within `timeout`;
    and {destination: why} for those that could not be listed."""
    def units(dest: Destination) -> list[str]:
        found = [unit_of_marker(name) for name in dest.list_markers(timeout)]
        return [f[1] for f in found if f and f[0] == prefix and step_of(f[1]) is not None]

    committed, unreachable = [], {}
    pool = ThreadPoolExecutor(max(1, len(dests)))
    futures = [(dest, pool.submit(units, dest)) for dest in dests]
    deadline = time.monotonic() + timeout + 5
    for dest, future in futures:
        try:
            committed.append((dest, future.result(timeout=max(0.1, deadline - time.monotonic()))))
        except FutureTimeout:
            unreachable[dest.uri] = f"no answer within {timeout:.0f} s"
        except Exception as exc:
            unreachable[dest.uri] = str(exc)[:300] or type(exc).__name__
    pool.shutdown(wait=False, cancel_futures=True)
    return committed, unreachable


def _fetch(dest: Destination, prefix: str, unit: str, root: Path, queue: Queue, timeout: float,
           force: bool) -> Outcome:
    """Download exactly the marker's files into a hidden staging folder (the watcher ignores it), verify each
    against the marker, record them durable at `dest`, then move the checkpoint into place in one rename."""
    started = time.monotonic()
    marker = Marker.from_bytes(dest.get_bytes(marker_name(prefix, unit), timeout))
    root.mkdir(parents=True, exist_ok=True)
    staging = root / RESTORE_STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        log.info("restore: fetching %s (%d file(s), %.1f MB) from %s ...", unit, len(marker.files),
                 marker.bytes / 1e6, dest.uri)
        dest.fetch([f.path for f in marker.files], staging)
        items = []
        for entry in marker.files:
            path = staging / entry.path
            if not path.is_file():
                raise VerifyError(f"{entry.path} is missing")
            size, sha256 = file_hash(path)
            if size != entry.size:
                raise VerifyError(f"{entry.path} has {size} bytes, the marker says {entry.size}")
            if sha256 != entry.sha256:
                raise VerifyError(f"{entry.path} differs from what was uploaded (sha256)")
            final = root / entry.path.removeprefix(prefix)
            items.append(Item(dest.uri, str(root), unit, entry.path, str(final), size, path.stat().st_mtime_ns,
                              sha256))
        # Recorded durable there first, so the watcher never sends it back to where it came from.
        queue.enqueue(items, status="durable")
        queue.commit(dest.uri, str(root), unit, len(items), marker.bytes)
        _place(staging / (prefix + unit), root / unit, force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    took = time.monotonic() - started
    log.info("restore: %s restored from %s (%d file(s), %.1f MB, every file verified) in %.1f s", unit, dest.uri,
             len(marker.files), marker.bytes / 1e6, took)
    return Outcome("restored", f"{unit} from {dest.uri}", unit, dest.uri)


def _place(staged: Path, target: Path, force: bool) -> None:
    """Move the verified checkpoint into place; with `force`, a same-named local one is swapped out first and
    put back if the move fails."""
    if not target.exists() and not target.is_symlink():
        os.replace(staged, target)
        return
    if not force:
        raise FileExistsError(f"{target} exists")
    aside = target.with_name(f".{target.name}.podvisor-replaced")
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(target, aside)
    try:
        os.replace(staged, target)
    except OSError:
        os.replace(aside, target)
        raise
    shutil.rmtree(aside) if aside.is_dir() else aside.unlink(missing_ok=True)
