"""Ship podvisor's own files (the run manifest, the job's log) beside the checkpoints, under `_podvisor/` at
every destination, through the same queue: verified, retried, drained on stop."""
from __future__ import annotations

from pathlib import Path

from entrypoint.context import PodContext
from services.uploader.destinations import file_hash
from services.uploader.layout import SHIP_UNIT, queue_path
from services.uploader.queue import Item, Queue
from services.uploader.settings import UploadSettings


def ship(ctx: PodContext, paths: list[Path]) -> int:
    """Queue these files' current versions for every destination; returns how many uploads were queued."""
    settings = ctx.optional_settings(UploadSettings)
    if settings is None or not settings.upload_enabled or not settings.upload_destinations:
        return 0
    queue = Queue(queue_path(ctx))
    known = queue.known_versions()
    items = []
    for path in paths:
        if not path.is_file():
            continue
        stat = path.stat()
        if known.get(str(path)) == (stat.st_size, stat.st_mtime_ns):
            continue
        size, sha256 = file_hash(path)
        items += [Item(dest, str(path.parent), SHIP_UNIT, f"{SHIP_UNIT}/{path.name}", str(path), size,
                       stat.st_mtime_ns, sha256) for dest in settings.upload_destinations]
    return queue.enqueue(items)
