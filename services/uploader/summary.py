"""The uploader's state in a few facts and one line: for `podvisor status`, `podvisor upload status` and
the stop gate (autostop, the job). Read from the disk, the SQLite queue and the uploader's status file, so
it is the truth even when the uploader is down, and it loads nothing of the uploader's machinery."""
from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from entrypoint.context import PodContext
from services.uploader.layout import SHIP_UNIT, queue_path, restore_state_path, status_path
from services.uploader.queue import Queue
from services.uploader.settings import UploadSettings
from services.uploader.units import Rules, unit_files


def summary(ctx: PodContext) -> dict[str, Any]:
    """The uploader's state for `podvisor status` and the stop gate (autostop, the job). What is pending comes
    from the disk and the SQLite queue, the truth even when the uploader is down or has not looked yet: a file
    on disk that the queue does not hold as it is now is not safe. Live figures come from its status file."""
    try:
        live = json.loads(status_path(ctx).read_text())
    except (OSError, ValueError):
        live = {}
    try:
        queue = Queue(queue_path(ctx))
        pending = queue.pending()
        uncommitted = queue.uncommitted(SHIP_UNIT)
        unqueued = len(unqueued_files(ctx, queue))
    except sqlite3.OperationalError as exc:  # a caller who may not write where the uploader keeps its queue
        return {"summary": f"the upload queue cannot be read as this user ({exc}); `sudo podvisor status` shows "
                           "it", "pending": 0, "uncommitted": 0, "unqueued": 0, "restore": None, "uploads": live}
    text = f"{len(pending)} upload(s) pending, {uncommitted} checkpoint(s) not committed, {unqueued} file(s) " \
           "not queued yet"
    restored = last_outcome(ctx)
    if restored and restored["state"] in ("held", "unreachable"):
        text += f"; RESTORE {restored['state'].upper()}: {restored['detail']}"
    for skipped in (restored or {}).get("skipped") or []:
        text += f"; restore skipped {skipped['checkpoint']} at {skipped['source']}: {skipped['reason'][:120]}"
    for held in live.get("waiting") or []:
        text += f"; {held['unit']} waits for {held['waiting_for']}"
    for lost in live.get("lost_locally") or []:
        text += f"; {lost['unit']} LOST LOCALLY ({lost['reason']}, {_ago(lost['at_epoch'])})"
    for f in live.get("in_flight") or []:
        text += (f"; sending {f['unit']} to {f['dest']}: {f['arrived']}/{f['files']} file(s), "
                 f"{f['bytes_per_s'] / 1e6:.1f} MB/s")
    for uri, info in (live.get("destinations") or {}).items():
        last = info.get("last_committed")
        if last:
            text += f"; last durable at {uri}: {last['unit']} ({_ago(last['at_epoch'])})"
        if info.get("last_error"):
            text += f"; {uri} FAILING: {info['last_error'][:200]}"
    full = [d["path"] for d in live.get("disk", []) if d.get("warning")]
    if full:
        text += f"; DISK OVER 90 % FULL: {', '.join(full)}"
    return {"summary": text, "pending": len(pending), "uncommitted": uncommitted, "unqueued": unqueued,
            "restore": restored, "uploads": live}


def _ago(epoch: float) -> str:
    seconds = max(0, time.time() - epoch)
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago" if seconds < 7200 else \
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


def unqueued_files(ctx: PodContext, queue: Queue) -> list[str]:
    """Files in the watch dirs that the queue does not know in their current version (a checkpoint folder
    still lacking its UPLOAD_SENTINEL is incomplete by the user's own rule, and does not count)."""
    settings = ctx.settings(UploadSettings)
    rules = Rules(settings.upload_include, settings.upload_exclude)
    sentinel = settings.upload_sentinel
    known = queue.known_versions()
    out = []
    for root in settings.upload_watch_dirs:
        for entry in (root.iterdir() if root.is_dir() else []):
            if sentinel and entry.is_dir() and not (entry / sentinel).exists():
                continue
            out += [path for path, version in unit_files(root, entry.name, rules).items() if known.get(path) != version]
    return out


def last_outcome(ctx: PodContext) -> dict | None:
    """The last restore's outcome (restored, held, empty ...), as restore recorded it."""
    try:
        return json.loads(restore_state_path(ctx).read_text())
    except (OSError, ValueError):
        return None
