"""`podvisor upload status [--json]`, `podvisor upload now PATH`, `podvisor restore`. Registered whenever
`podvisor` runs, so the uploader's machinery is imported only by the command that uses it."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from entrypoint import logs
from entrypoint.context import current
from services.uploader.layout import queue_path, staging_base
from services.uploader.queue import Queue
from services.uploader.settings import UploadSettings
from services.uploader.summary import summary
from services.uploader.units import Rules, unit_files, unit_of


def cmd_status(args: argparse.Namespace) -> int:
    info = summary(current())
    print(json.dumps(info, indent=2) if args.json else info["summary"])
    return 0


def cmd_now(args: argparse.Namespace) -> int:
    """Queue PATH's checkpoint now, without waiting for it to settle."""
    from services.uploader.hashes import Hashes
    from services.uploader.snapshot import Changed, Vanished
    from services.uploader.uploader import HASH_THREADS, enqueue_unit

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
    try:
        added = enqueue_unit(queue, list(settings.upload_destinations), roots, root, unit, snapshot,
                             queue.known_versions(), staging_base(ctx, root), Hashes(HASH_THREADS))
    except (Vanished, Changed) as exc:  # kept only whole: the uploader takes it once it settles
        print(f"{unit} not queued: {exc}", file=sys.stderr)
        return 1
    print(f"{added} upload(s) queued for {unit}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from services.uploader.restore import restore

    ctx = current()
    logs.configure(ctx.core.podvisor_log_level, "podvisor: %(message)s")
    started = time.monotonic()
    outcome = restore(ctx, force=args.force)
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
    p.add_argument("--force", action="store_true",
                   help="even when a local checkpoint exists (a same-named one is replaced)")
    p.set_defaults(func=cmd_restore)
