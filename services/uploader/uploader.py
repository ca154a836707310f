"""The uploader process: find complete checkpoints, queue them per destination, upload and verify each with
retries, prune by retention, publish its state, and drain the queue on SIGTERM within the stop grace.

One worker thread per destination, so a destination that is down never holds back the others.
"""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path

from entrypoint.context import PodContext
from entrypoint.redact import redact, secrets_of
from services.uploader.destinations import Destination, FileVersion, file_hash, parse
from services.uploader.queue import Queue, Row
from services.uploader.scanner import Rules, Scanner, Snapshot
from services.uploader.settings import UploadSettings
from entrypoint.steps import newest_first, step_of

log = logging.getLogger("uploader")
TICK_SECONDS = 0.1
STATUS_EVERY_SECONDS = 1.0
IDLE_WAIT_SECONDS = 0.5
DISK_WARN_PERCENT = 90
STOP_MARGIN_SECONDS = 1.0


def queue_path(ctx: PodContext) -> Path:
    return ctx.service_dir("uploader") / "queue.sqlite3"


def status_path(ctx: PodContext) -> Path:
    return ctx.service_dir("uploader") / "status.json"


def remote_name(roots: list[Path], root: Path, path: Path) -> str:
    """Where a local file goes under a destination: its path in the watch dir (prefixed by the watch dir's
    name when there are several, so two `checkpoint-1/` never collide)."""
    rel = path.relative_to(root).as_posix()
    return f"{root.name}/{rel}" if len(roots) > 1 else rel


def enqueue_unit(queue: Queue, dests: list[str], roots: list[Path], root: Path, unit: str,
                 snapshot: Snapshot, known: dict[str, tuple[int, int]]) -> int:
    """Hash each new or changed file of a complete checkpoint and queue it for every destination."""
    added = 0
    for path_text, (size, mtime_ns) in sorted(snapshot.items()):
        if known.get(path_text) == (size, mtime_ns):
            continue
        path = Path(path_text)
        real_size, sha256 = file_hash(path)
        stat = path.stat()
        if (real_size, stat.st_mtime_ns) != (size, mtime_ns):
            continue  # changed while hashed: the scanner will see it settle again
        remote = remote_name(roots, root, path)
        for dest in dests:
            added += queue.enqueue(dest, str(root), unit, remote, path_text, size, mtime_ns, sha256)
        known[path_text] = (size, mtime_ns)
    return added


class Uploader:
    def __init__(self, ctx: PodContext) -> None:
        self.ctx = ctx
        self.settings: UploadSettings = ctx.section("uploader")  # type: ignore[assignment]
        self.secrets = secrets_of(ctx.config)
        self.roots = list(self.settings.upload_watch_dirs)
        self.dests: list[Destination] = [parse(uri) for uri in self.settings.upload_destinations]
        self.queue = Queue(queue_path(ctx))
        self.known = self.queue.known_versions()
        rules = Rules(self.settings.upload_include, self.settings.upload_exclude, self.settings.upload_sentinel)
        self.scanner = Scanner(self.roots, rules, self.settings.upload_settle_seconds,
                               self.settings.upload_rescan_seconds, self.settings.upload_polling,
                               known=lambda snap: all(self.known.get(p) == v for p, v in snap.items()))
        self.stopping = threading.Event()
        self.wake = {dest.uri: threading.Event() for dest in self.dests}
        self.status_written = 0.0
        self.deadline = float("inf")
        self.in_flight: dict[str, dict] = {}
        self.errors: dict[str, str] = {}
        self.newly_durable: set[tuple[str, str, str]] = set()
        self.lock = threading.Lock()

    # -- the main loop ------------------------------------------------------------------------------------
    def run(self) -> int:
        recovered = self.queue.recover()
        if recovered:
            log.info("%d upload(s) were in flight at the last stop; queued again", recovered)
        if self.settings.restore_on_start and self.dests:
            from services.uploader.restore import restore

            try:
                restore(self.ctx)
            except Exception as exc:  # a failed restore must not stop uploads of what gets written
                log.error("restore failed: %s: %s", type(exc).__name__, redact(str(exc), self.secrets)[:300])
            self.known = self.queue.known_versions()
        self.reconcile()
        self.scanner.start()
        workers = [threading.Thread(target=self.work, args=(dest,), name=f"upload:{dest.uri}", daemon=True)
                   for dest in self.dests]
        for worker in workers:
            worker.start()
        log.info("watching %s -> %s", ", ".join(map(str, self.roots)),
                 ", ".join(d.uri for d in self.dests) or "no destination (nothing will be uploaded)")
        while True:
            self.tick()
            if self.stopping.is_set() and self.drained_or_late():
                break
            time.sleep(TICK_SECONDS)
        self.scanner.stop()
        for dest in self.dests:
            dest.close()
        for worker in workers:
            worker.join(max(0.0, self.deadline - time.monotonic()) + 2)
        self.queue.recover()
        left = self.queue.pending()
        self.write_status()
        if left:
            log.warning("stopping with %d upload(s) not done; they stay queued for the next boot: %s", len(left),
                        ", ".join(sorted({f'{r.remote} -> {r.dest}' for r in left})[:10]))
            return 0
        log.info("all uploads drained; stopping")
        return 0

    def tick(self, force_rescan: bool = False) -> None:
        for root, unit, snapshot in self.scanner.poll(force_rescan=force_rescan):
            added = enqueue_unit(self.queue, [d.uri for d in self.dests], self.roots, root, unit, snapshot,
                                 self.known)
            if added:
                log.info("checkpoint %s complete: %d upload(s) queued", unit, added)
                for event in self.wake.values():
                    event.set()
        self.retain()
        if time.monotonic() - self.status_written >= STATUS_EVERY_SECONDS:
            self.write_status()

    def drained_or_late(self) -> bool:
        if time.monotonic() >= self.deadline:
            return True
        return not self.queue.pending() and self.scanner.settling() == 0

    def stop(self, stop_wait: float) -> None:
        """SIGTERM: keep scanning and uploading until drained or `stop_wait` (the stop grace) is spent."""
        self.deadline = time.monotonic() + max(0.0, stop_wait - STOP_MARGIN_SECONDS)
        self.stopping.set()
        log.info("stop requested: draining %d pending upload(s) within %.0f s", len(self.queue.pending()),
                 stop_wait - STOP_MARGIN_SECONDS)

    def reconcile(self) -> None:
        """At start: queued versions whose file is gone or changed can never be uploaded as recorded."""
        for row in self.queue.pending():
            try:
                stat = Path(row.local).stat()
                current = (stat.st_size, stat.st_mtime_ns)
            except OSError:
                current = None
            if current != (row.size, row.mtime_ns):
                log.warning("%s changed or vanished while the uploader was down; its new version is rescanned",
                            row.remote)
                self.queue.mark([row.id], "superseded")
        self.scanner.poll(force_rescan=True)

    # -- one destination ----------------------------------------------------------------------------------
    def work(self, dest: Destination) -> None:
        while not (self.stopping.is_set() and time.monotonic() >= self.deadline):
            batch = self.queue.next_batch(dest.uri)
            if not batch:
                if self.stopping.is_set() and not self.queue.pending(dest.uri):
                    return
                self.wake[dest.uri].wait(IDLE_WAIT_SECONDS)  # woken at once when something is queued
                self.wake[dest.uri].clear()
                continue
            self.upload(dest, batch)

    def upload(self, dest: Destination, batch: list[Row]) -> None:
        files, ids = [], []
        for row in batch:
            try:
                stat = Path(row.local).stat()
                intact = (stat.st_size, stat.st_mtime_ns) == (row.size, row.mtime_ns)
            except OSError:
                intact = False
            if not intact:
                log.warning("%s changed or vanished before upload to %s; skipping this version", row.remote,
                            dest.uri)
                self.queue.mark([row.id], "superseded")
                continue
            files.append(FileVersion(Path(row.local), row.remote, row.size, row.sha256))
            ids.append(row.id)
        if not files:
            return
        total = sum(f.size for f in files)
        started = time.monotonic()
        with self.lock:
            self.in_flight[dest.uri] = {"files": [f.remote for f in files], "bytes": total, "sent": 0,
                                        "started": started}
        self.queue.mark(ids, "uploading")

        def progress(sent: int) -> None:
            with self.lock:
                if dest.uri in self.in_flight:
                    self.in_flight[dest.uri]["sent"] = sent

        try:
            dest.upload(files, progress)
        except Exception as exc:  # any failure: retried with backoff, never lost
            attempts = batch[0].attempts + 1
            delay = min(self.settings.upload_retry_max_seconds, 2.0 ** attempts) * random.uniform(0.5, 1.0)
            error = redact(f"{type(exc).__name__}: {exc}", self.secrets)[:500]
            self.queue.failed(ids, error, time.time() + delay)
            with self.lock:
                self.errors[dest.uri] = error
            log.warning("upload of %s to %s failed (attempt %d), retry in %.0f s: %s", files[0].remote.split("/")[0],
                        dest.uri, attempts, delay, error)
        else:
            self.queue.mark(ids, "durable")
            took = time.monotonic() - started
            with self.lock:
                self.errors.pop(dest.uri, None)
                self.newly_durable.add((dest.uri, batch[0].root, batch[0].unit))
            log.info("durable: %s (%d file(s), %.1f MB) at %s in %.2f s (%.1f MB/s)", batch[0].unit, len(files),
                     total / 1e6, dest.uri, took, total / 1e6 / max(took, 1e-6))
        finally:
            with self.lock:
                self.in_flight.pop(dest.uri, None)

    # -- retention ----------------------------------------------------------------------------------------
    def retain(self) -> None:
        with self.lock:
            fresh, self.newly_durable = self.newly_durable, set()
        keep_remote = self.settings.upload_keep_last_remote
        if keep_remote and fresh:
            for dest in self.dests:
                if any(d == dest.uri for d, _, _ in fresh):
                    self.prune_remote(dest, keep_remote)
        if self.settings.upload_keep_last_local and fresh:
            self.prune_local(self.settings.upload_keep_last_local)

    def prune_local(self, keep: int) -> None:
        """Delete local checkpoints beyond the newest `keep`, but only those durable at every destination."""
        uris = [d.uri for d in self.dests]
        for root in self.roots:
            names = [p.name for p in root.iterdir() if step_of(p.name) is not None and not p.name.startswith(".")]
            for name in newest_first(names)[keep:]:
                if not uris or not self.queue.durable_everywhere(str(root), name, uris):
                    continue
                path = root / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
                self.queue.forget_unit(str(root), name)
                log.info("retention: deleted local %s (durable at every destination)", name)

    def prune_remote(self, dest: Destination, keep: int) -> None:
        try:
            names = [n for n in dest.list_units() if step_of(n) is not None]
            for name in newest_first(names)[keep:]:
                dest.delete(name)
                log.info("retention: deleted %s at %s", name, dest.uri)
        except Exception as exc:
            log.warning("retention at %s failed: %s", dest.uri, redact(str(exc), self.secrets)[:300])

    # -- state for status and autostop --------------------------------------------------------------------
    def write_status(self) -> None:
        now = self.status_written = time.monotonic()
        rows = self.queue.pending()
        with self.lock:
            flights = [{"dest": uri, "files": f["files"], "bytes": f["bytes"], "sent": f["sent"],
                        "bytes_per_s": round(f["sent"] / max(now - f["started"], 1e-3))}
                       for uri, f in self.in_flight.items()]
            errors = dict(self.errors)
        last = self.queue.last_durable()
        disk = []
        for root in self.roots:
            try:
                usage = shutil.disk_usage(root)
            except OSError:
                continue
            percent = round(100 * usage.used / usage.total, 1)
            disk.append({"path": str(root), "used_percent": percent, "warning": percent > DISK_WARN_PERCENT})
        status = {
            "updated_epoch": time.time(),
            "pid": os.getpid(),
            "queued": sum(1 for r in rows if r.status == "queued"),
            "uploading": sum(1 for r in rows if r.status == "uploading"),
            "settling": self.scanner.settling(),
            "in_flight": flights,
            "destinations": {d.uri: {"pending": sum(1 for r in rows if r.dest == d.uri),
                                     "last_error": errors.get(d.uri),
                                     "last_durable": _durable(last.get(d.uri))} for d in self.dests},
            "disk": disk,
            "stopping": self.stopping.is_set(),
        }
        path = status_path(self.ctx)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=1))
        os.replace(tmp, path)


def _durable(row: Row | None) -> dict | None:
    return None if row is None else {"unit": row.unit, "file": row.remote, "at_epoch": row.durable_at}


def main() -> None:
    from entrypoint.context import current

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    uploader = Uploader(current())
    stop_wait = float(os.environ.get("PODVISOR_STOP_WAIT", "20"))
    signal.signal(signal.SIGTERM, lambda *_: uploader.stop(stop_wait))
    signal.signal(signal.SIGINT, lambda *_: uploader.stop(stop_wait))
    raise SystemExit(uploader.run())


