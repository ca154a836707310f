"""`podvisor upload status [--json]`, `podvisor upload now PATH`, `podvisor restore`."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from entrypoint.context import PodContext, current
from services.uploader.layout import SHIP_UNIT, queue_path, status_path
from services.uploader.queue import Queue
from services.uploader.restore import last_outcome
from services.uploader.scanner import Rules, unit_files, unit_of
from services.uploader.settings import UploadSettings
from services.uploader.uploader import enqueue_unit


def summary(ctx: PodContext) -> dict[str, Any]:
    """The uploader's state for `podvisor status` and the stop gate (autostop, the job). What is pending comes
    from the disk and the SQLite queue, the truth even when the uploader is down or has not looked yet: a file
    on disk that the queue does not hold as it is now is not safe. Live figures come from its status file."""
    try:
        live = json.loads(status_path(ctx).read_text())
    except (OSError, ValueError):
        live = {}
    queue = Queue(queue_path(ctx))
    pending = queue.pending()
    uncommitted = queue.uncommitted(SHIP_UNIT)
    unqueued = len(unqueued_files(ctx, queue))
    text = f"{len(pending)} upload(s) pending, {uncommitted} checkpoint(s) not committed, {unqueued} file(s) " \
           "not queued yet"
    restored = last_outcome(ctx)
    if restored and restored["state"] in ("held", "unreachable"):
        text += f"; RESTORE {restored['state'].upper()}: {restored['detail']}"
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


def cmd_status(args: argparse.Namespace) -> int:
    info = summary(current())
    print(json.dumps(info, indent=2) if args.json else info["summary"])
    return 0


def cmd_now(args: argparse.Namespace) -> int:
    """Queue PATH's checkpoint now, without waiting for it to settle."""
    ctx = current()
    settings = ctx.settings(UploadSettings)
    roots = list(settings.upload_watch_dirs)
    path = Path(args.path).resolve()
    found = unit_of(path, roots)
    if found is None:
        print(f"{path} is not inside a watch dir ({', '.join(map(str, roots))})", file=sys.stderr)
        return 2
    root, unit = found
    rules = Rules(settings.upload_include, settings.upload_exclude)
    snapshot = unit_files(root, unit, rules)
    if path.is_file():
        snapshot = {k: v for k, v in snapshot.items() if k == str(path)}
    queue = Queue(queue_path(ctx))
    added = enqueue_unit(queue, list(settings.upload_destinations), roots, root, unit, snapshot,
                         queue.known_versions())
    print(f"{added} upload(s) queued for {unit}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from services.uploader.restore import restore

    logging.basicConfig(level=logging.INFO, format="podvisor: %(message)s", stream=sys.stdout)
    started = time.monotonic()
    outcome = restore(current(), force=args.force)
    if outcome.state == "restored":
        print(f"restored {outcome.checkpoint} from {outcome.source} in {time.monotonic() - started:.1f} s")
        return 0
    print(f"nothing restored: {outcome.detail}")
    return 1 if outcome.state in ("held", "unreachable") else 0


def register(sub: Any) -> None:
    upload = sub.add_parser("upload", help="the checkpoint uploader's queue")
    verbs = upload.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("status", help="queue depth, transfer in flight, last durable checkpoint")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
    p = verbs.add_parser("now", help="queue a checkpoint (file or folder) now, without the settle wait")
    p.add_argument("path")
    p.set_defaults(func=cmd_now)
    p = sub.add_parser("restore", help="fetch the newest committed checkpoint from the destinations, verified")
    p.add_argument("--force", action="store_true", help="even when a local checkpoint exists (a same-named one is replaced)")
    p.set_defaults(func=cmd_restore)
