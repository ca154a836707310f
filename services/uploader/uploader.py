"""The uploader process: find complete checkpoints, queue them per destination, ship each in one transfer,
write its commit marker last, prune by retention, publish its state, and drain on SIGTERM until the stop
deadline.

One worker thread per destination, so a destination that is down never holds back the others. A restore
runs beside them (in a thread), so checkpoints written meanwhile are queued as usual.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from entrypoint.backoff import Backoff
from entrypoint.context import PodContext
from entrypoint.files import write_atomically
from entrypoint.redact import redact, secrets_of
from entrypoint.steps import newest_first, step_of
from services.uploader.destinations import Batch, Cause, Destination, FileVersion, VerifyError, cause_of, parse
from services.uploader.hashes import Hashes
from services.uploader.layout import (SHIP_UNIT, marker_name, queue_path, remote_name, root_prefix, staging_base,
                                      status_path, unit_of_marker, writer_lock_path)
from services.uploader.marker import Marker, MarkerFile
from services.uploader.queue import Item, Queue, Row
from services.uploader.scanner import Scanner
from services.uploader.settings import UploadSettings
from services.uploader.snapshot import Changed, Vanished, held_bytes, release, source_of, take
from services.uploader.units import Rules, Snapshot

log = logging.getLogger("uploader")
TICK_SECONDS = 0.1
STATUS_EVERY_SECONDS = 1.0
IDLE_WAIT_SECONDS = 0.5
DISK_WARN_PERCENT = 90
FINAL_STATUS_SECONDS = 1.0
"""Kept back from the stop deadline for the final status and exit."""
PROBE_SECONDS = 3.0
"""How often an unreachable destination is asked whether it answers again (then its backoff is dropped)."""
PROBE_TIMEOUT_SECONDS = 10.0
MARK_EVERY_SECONDS = 0.5
"""Arrived files are recorded in the queue in groups: one fsync'd transaction per group, not per file."""
RESTORE_RETRY = Backoff(5.0, 60.0)
"""How often a restore held by unreachable destinations asks them again."""
HASH_THREADS = os.cpu_count() or 2
"""Causes a cheap probe can see go away; a 403 or a missing bucket needs a fix, not a probe."""
LOST_KEPT = 20
"""Checkpoints lost locally that status lists (the log has them all)."""


def enqueue_unit(queue: Queue, dests: list[str], roots: list[Path], root: Path, unit: str,
                 snapshot: Snapshot, known: dict[str, tuple[int, int]], keep_in: Path, hashes: Hashes) -> int:
    """Keep the new or changed files of a complete checkpoint in a snapshot (hard links: see `snapshot`), take
    their hashes (mostly done while they were written, see `hashes`; the rest on every core, as hashlib lets go
    of the GIL), then queue them all for every destination in one transaction, so no worker ever sees (and
    commits) half of a checkpoint. Raises Vanished when the checkpoint is gone before it could be kept, Changed
    when it moved on meanwhile (the scanner sees it settle again)."""
    fresh = {path_text: version for path_text, version in sorted(snapshot.items()) if known.get(path_text) != version}
    if not fresh or not dests:
        known.update(fresh)
        return 0
    staging = take(keep_in, root, unit, fresh)
    kept = str(staging or "")
    sources = [source_of(kept, str(root), path_text) for path_text in fresh]
    with ThreadPoolExecutor(HASH_THREADS) as pool:
        digests = list(pool.map(hashes.of, sources))
    items: list[Item] = []
    for (path_text, (size, mtime_ns)), source, (real_size, sha256) in zip(fresh.items(), sources, digests,
                                                                           strict=True):
        if (real_size, Path(source).stat().st_mtime_ns) != (size, mtime_ns):
            release_folder(staging)
            raise Changed(f"{path_text} changed while it was hashed")
        remote = remote_name(roots, root, Path(path_text))
        items += [Item(dest, str(root), unit, remote, path_text, size, mtime_ns, sha256, kept) for dest in dests]
    added = queue.enqueue(items)
    known.update(fresh)
    if not added:  # every version was known already (written back unchanged): nothing to keep
        release_folder(staging)
    return added


def release_folder(staging: Path | None) -> None:
    """A snapshot nothing was queued from goes at once (and its base folder with it when that is empty)."""
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)
        try:
            staging.parent.rmdir()
        except OSError:
            pass


def batches(rows: list[Row]) -> list[tuple[Batch, list[int]]]:
    """Group one checkpoint's rows by (local folder they are read from, folder at the destination): one transfer
    each. A checkpoint is one group per snapshot; podvisor's own files (under `_podvisor/`) come from elsewhere."""
    groups: dict[tuple[Path, str], list[tuple[FileVersion, int]]] = {}
    for row in rows:
        source, base = Path(row.source), Path(row.staging or row.root)
        rel = source.relative_to(base).as_posix() if source.is_relative_to(base) else ""
        if not rel or not row.remote.endswith(rel):
            base, rel = source.parent, source.name
        groups.setdefault((base, row.remote[:len(row.remote) - len(rel)]), []).append(
            (FileVersion(source, row.remote, row.size, row.sha256), row.id))
    return [(Batch(base, prefix, rows[0].unit, [f for f, _ in members]), [i for _, i in members])
            for (base, prefix), members in groups.items()]


class Uploader:
    def __init__(self, ctx: PodContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings(UploadSettings)
        self.secrets = secrets_of(ctx.config)
        self.roots = list(self.settings.upload_watch_dirs)
        self.staging = {root: staging_base(ctx, root) for root in self.roots}
        self.dests: list[Destination] = [parse(uri, hf_private=self.settings.upload_hf_private)
                                         for uri in self.settings.upload_destinations]
        for dest in self.dests:
            dest.stall_seconds = self.settings.upload_stall_seconds
        self.queue = Queue(queue_path(ctx))
        self.known = self.queue.known_versions()
        rules = Rules(self.settings.upload_include, self.settings.upload_exclude, self.settings.upload_sentinel)
        self.hashes = Hashes(HASH_THREADS)
        self.scanner = Scanner(self.roots, rules, self.settings.upload_settle_seconds,
                               self.settings.upload_rescan_seconds, self.settings.upload_polling,
                               known=lambda snap: all(self.known.get(p) == v for p, v in snap.items()),
                               frameworks=self.settings.upload_detect_frameworks, written=self.hashes.early)
        self.stopping = threading.Event()
        self.wake = {dest.uri: threading.Event() for dest in self.dests}
        self.status_written = 0.0
        self.deadline = float("inf")
        self.in_flight: dict[str, dict] = {}
        self.errors: dict[str, Failure] = {}
        self.backoff = Backoff(2.0, self.settings.upload_retry_max_seconds, jitter=0.5)
        self.probed: dict[str, float] = {}
        self.commit_hold: dict[str, float] = {}
        self.newly_committed: set[str] = set()
        self.lost: list[dict] = []
        self.staging_peak = 0
        self.lock = threading.Lock()

    # -- the main loop ------------------------------------------------------------------------------------
    def run(self) -> int:
        holder = self._one_writer()
        recovered = self.queue.recover()
        if recovered:
            log.info("%d upload(s) were in flight at the last stop; queued again", recovered)
        threads = [threading.Thread(target=self.work, args=(dest,), name=f"upload:{dest.uri}", daemon=True)
                   for dest in self.dests]
        if self.settings.restore_on_start and self.dests:
            threading.Thread(target=self.restore_until_settled, name="restore", daemon=True).start()
        self.reconcile()
        self.release_staging()
        self.scanner.start()
        for thread in threads:
            thread.start()
        log.info("watching %s -> %s", ", ".join(map(str, self.roots)),
                 ", ".join(d.uri for d in self.dests) or "no destination (nothing will be uploaded)")
        while True:
            self.tick()
            if self.stopping.is_set() and self.drained_or_late():
                break
            time.sleep(min(TICK_SECONDS, self.scanner.next_due()))
        self.scanner.stop()
        self.hashes.close()
        for dest in self.dests:
            dest.close()
        for thread in threads:
            thread.join(max(0.0, self.deadline - time.monotonic()) + 2)
        self.queue.recover()
        left = self.queue.pending()
        self.write_status()
        holder.close()
        if left:
            log.warning("stopping with %d upload(s) not done; they stay queued for the next boot: %s", len(left),
                        ", ".join(sorted({f'{r.unit} -> {r.dest}' for r in left})[:10]))
            return 0
        log.info("all uploads drained and committed; stopping")
        return 0

    def _one_writer(self):
        """Hold the writer lock: a restarted uploader waits for a dying one, so no object has two writers."""
        path = writer_lock_path(self.ctx)
        path.parent.mkdir(parents=True, exist_ok=True)
        holder = path.open("w")
        try:
            fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another uploader holds %s; waiting for it to exit", path)
            fcntl.flock(holder, fcntl.LOCK_EX)
        for dest in self.dests:  # nothing of ours is in flight now: partial uploads at the store are stale
            threading.Thread(target=self._cleanup, args=(dest,), daemon=True).start()
        return holder

    def _cleanup(self, dest: Destination) -> None:
        try:
            dest.cleanup()
        except Exception as exc:  # not every S3-like store lists multipart uploads; nothing depends on it
            log.debug("cleanup of partial uploads at %s skipped: %s", dest.uri, exc)

    def restore_until_settled(self) -> None:
        """Restore at start; while the destinations cannot be reached (restore held), ask again with backoff."""
        from services.uploader.restore import restore

        held = 0
        while not self.stopping.is_set():
            try:
                outcome = restore(self.ctx, dests=self.dests)
            except Exception as exc:  # a failed restore must not stop uploads of what gets written
                log.error("restore failed: %s: %s", type(exc).__name__, redact(str(exc), self.secrets)[:300])
                return
            if outcome.state != "held":
                return
            held += 1
            self.stopping.wait(RESTORE_RETRY.delay(held))

    def tick(self) -> None:
        for root, unit, snapshot in self.scanner.poll():
            try:
                added = enqueue_unit(self.queue, [d.uri for d in self.dests], self.roots, root, unit, snapshot,
                                     self.known, self.staging[root], self.hashes)
            except Vanished as exc:
                self.lost_locally(unit, str(exc))
                continue
            except Changed as exc:
                log.info("checkpoint %s changed while it was being queued (%s); queued once it settles", unit, exc)
                self.scanner.again(root, unit, snapshot)
                continue
            if added:
                log.info("checkpoint %s complete: %d upload(s) queued", unit, added)
                for event in self.wake.values():
                    event.set()
        for root, unit, files in self.scanner.take_vanished():
            if not _renamed(root, unit):
                self.lost_locally(unit, f"deleted while it was being written ({files} file(s) seen), before it "
                                        "was complete")
        if self.retain():
            self.release_staging()
        if time.monotonic() - self.status_written >= STATUS_EVERY_SECONDS:
            self.write_status()

    def lost_locally(self, unit: str, why: str) -> None:
        """A checkpoint the trainer deleted before it could be kept: said in the log and status, never committed."""
        log.warning("checkpoint %s LOST LOCALLY: %s; no destination will have it", unit, why)
        with self.lock:
            self.lost = [*self.lost, {"unit": unit, "reason": why, "at_epoch": time.time()}][-LOST_KEPT:]

    def release_staging(self) -> None:
        """Free the snapshots every destination has committed (or that nothing needs any more)."""
        for folder in release(list(self.staging.values()), self.queue.staging_in_use()):
            log.debug("snapshot %s freed", folder.name)

    def drained_or_late(self) -> bool:
        if time.monotonic() >= self.deadline:
            return True
        return not self.queue.pending() and not self.queue.uncommitted(SHIP_UNIT) and self.scanner.settling() == 0

    def stop(self) -> None:
        """SIGTERM: keep scanning, uploading and committing until drained or the stop deadline, counted from
        when the shutdown began (the grace less what the other services took)."""
        left = self.ctx.stop_deadline() - time.time() - FINAL_STATUS_SECONDS
        self.deadline = time.monotonic() + max(0.0, left)
        self.stopping.set()
        for event in self.wake.values():
            event.set()
        log.info("stop requested: draining %d pending upload(s) within %.1f s", len(self.queue.pending()),
                 max(0.0, left))

    def reconcile(self) -> None:
        """At start: queued versions whose file is gone or changed can never be uploaded as recorded."""
        dropped = [row for row in self.queue.pending() if not _intact(row)]
        if dropped:
            self.drop(dropped, "while the uploader was down")
        self.scanner.poll(force_rescan=True)

    def drop(self, rows: list[Row], when: str) -> None:
        """Queued versions whose file changed or vanished before they were shipped. A changed one is superseded:
        its checkpoint waits for the new version, which the scanner queues. A checkpoint one of whose files is
        gone can never be shipped as it was queued: it is lost at that destination, and said so, never committed
        with what is left of it (podvisor's own files are simply sent again when they next change)."""
        gone = set()
        for row in rows:
            if Path(row.local).exists() or row.unit == SHIP_UNIT:
                log.warning("%s changed %s; its new version is queued once it settles", row.remote, when)
                self.queue.mark([row.id], "superseded")
            else:
                gone.add((row.dest, row.root, row.unit, row.remote))
        for dest, root, unit, remote in gone:
            if self.queue.lose(dest, root, unit):
                self.lost_locally(unit, f"{remote} vanished {when}")
        self.release_staging()

    # -- one destination ----------------------------------------------------------------------------------
    def late(self) -> bool:
        return self.stopping.is_set() and time.monotonic() >= self.deadline

    def work(self, dest: Destination) -> None:
        while not self.late():
            batch = self.queue.next_batch(dest.uri)
            if batch and self.unreachable(dest) and not self.answers(dest):
                # A full transfer against a dead endpoint spends half a minute in retries; a listing fails
                # in milliseconds with the same cause, so it goes first and the backoff grows meanwhile.
                self.failed(dest, [r.id for r in batch], batch[0].attempts + 1, self.errors[dest.uri].error)
                continue
            if batch:
                self.upload(dest, batch)
                continue
            if self.commit(dest):
                continue
            if self.stopping.is_set() and not self.queue.pending(dest.uri):
                return
            self.probe(dest)
            self.wake[dest.uri].wait(IDLE_WAIT_SECONDS)  # woken at once when something is queued
            self.wake[dest.uri].clear()

    def upload(self, dest: Destination, rows: list[Row]) -> None:
        intact = [row for row in rows if _intact(row)]
        if len(intact) < len(rows):
            self.drop([row for row in rows if row not in intact], f"before upload to {dest.uri}")
        if not intact:
            return
        total = sum(r.size for r in intact)
        started = time.monotonic()
        with self.lock:
            self.in_flight[dest.uri] = {"unit": intact[0].unit, "files": len(intact), "bytes": total, "sent": 0,
                                        "arrived": 0, "started": started}
        ids = [r.id for r in intact]
        self.queue.mark(ids, "uploading")
        arrived = _Arrivals(self.queue)

        def progress(sent: int) -> None:
            with self.lock:
                if dest.uri in self.in_flight:
                    self.in_flight[dest.uri].update(sent=sent, arrived=arrived.count)

        try:
            for batch, batch_ids in batches(intact):
                by_version = dict(zip(batch.files, batch_ids, strict=True))
                dest.upload(batch, arrived.recorder(by_version), progress)
        except Exception as exc:  # any failure: retried with backoff, never lost
            arrived.flush()
            unsent = [i for i in ids if i not in arrived.ids]
            if self.late():
                self.queue.requeue(unsent)
                log.info("upload of %s to %s cancelled at the stop deadline (%d of %d file(s) arrived); the rest "
                         "stays queued", intact[0].unit, dest.uri, len(arrived.ids), len(ids))
            else:
                self.failed(dest, unsent, intact[0].attempts + 1, exc)
        else:
            arrived.flush()
            took = time.monotonic() - started
            self.answered(dest)
            log.info("uploaded: %s (%d file(s), %.1f MB) to %s in %.2f s (%.1f MB/s)", intact[0].unit, len(ids),
                     total / 1e6, dest.uri, took, total / 1e6 / max(took, 1e-6))
        finally:
            with self.lock:
                self.in_flight.pop(dest.uri, None)

    def commit(self, dest: Destination) -> bool:
        """Write the marker of every checkpoint now wholly durable at `dest`, last; True if one was written."""
        if time.monotonic() < self.commit_hold.get(dest.uri, 0.0):
            return False
        wrote = False
        for root, unit, rows in self.queue.to_commit(dest.uri, SHIP_UNIT):
            prefix = root_prefix(self.roots, Path(root)) if Path(root) in self.roots else ""
            marker = Marker(unit, prefix, [MarkerFile(r.remote, r.size, r.sha256) for r in rows], self.ctx.run_id)
            try:
                held = dest.sizes([r.remote for r in rows], self.settings.upload_stall_seconds)
                absent = [r for r in rows if held.get(r.remote) != r.size]
                if not absent:
                    dest.put_bytes(marker_name(prefix, unit), marker.to_bytes())
            except Exception as exc:
                self.failed(dest, [], 1, exc)
                self.commit_hold[dest.uri] = time.monotonic() + PROBE_SECONDS
                return wrote
            if absent:  # the transfer said they arrived, the destination's listing says not: send them again
                self.failed(dest, [r.id for r in absent], max(r.attempts for r in absent) + 1,
                            VerifyError(f"{len(absent)} of {len(rows)} file(s) of {unit} not at the destination "
                                        f"with their size (first: {absent[0].remote}); no marker, sending them again"))
                continue
            self.queue.commit(dest.uri, root, unit, len(rows), marker.bytes)
            with self.lock:
                self.newly_committed.add(dest.uri)
            log.info("committed: %s at %s (%d file(s), %.1f MB, every file listed there; marker written last)",
                     unit, dest.uri, len(rows), marker.bytes / 1e6)
            wrote = True
        return wrote

    def failed(self, dest: Destination, ids: list[int], attempts: int, error: BaseException) -> None:
        """Back off and say so: one warning per destination when its kind of failure changes, not one per
        attempt."""
        failure = Failure(cause_of(error), error, redact(f"{type(error).__name__}: {error}", self.secrets)[:500])
        if ids:
            self.queue.failed(ids, failure.text, time.time() + self.backoff.delay(attempts))
        with self.lock:
            before, self.errors[dest.uri] = self.errors.get(dest.uri), failure
        if before is None or before.cause != failure.cause:
            log.warning("uploads to %s failing: %s (retrying with backoff; nothing is lost)", dest.uri, failure.text)

    def answered(self, dest: Destination) -> None:
        with self.lock:
            before = self.errors.pop(dest.uri, None)
        if before is not None:
            log.info("%s answers again; uploads resume", dest.uri)

    def unreachable(self, dest: Destination) -> bool:
        failure = self.errors.get(dest.uri)
        return failure is not None and failure.cause is Cause.UNREACHABLE

    def answers(self, dest: Destination) -> bool:
        """A cheap listing; when the destination answers again, what waits for a backoff goes at once."""
        self.probed[dest.uri] = time.monotonic()
        try:
            dest.probe(PROBE_TIMEOUT_SECONDS)
        except Exception:
            return False
        self.queue.retry_now(dest.uri)
        self.commit_hold.pop(dest.uri, None)
        self.answered(dest)
        return True

    def probe(self, dest: Destination) -> None:
        """While a destination is unreachable, ask it every few seconds whether it answers again."""
        if self.unreachable(dest) and time.monotonic() - self.probed.get(dest.uri, 0) >= PROBE_SECONDS:
            self.answers(dest)

    # -- retention ----------------------------------------------------------------------------------------
    def retain(self) -> bool:
        """Prune by the retention settings after new commits; True if anything was committed since last asked."""
        with self.lock:
            fresh, self.newly_committed = self.newly_committed, set()
        keep_remote = self.settings.upload_keep_last_remote
        if keep_remote and fresh:
            for dest in self.dests:
                if dest.uri in fresh:
                    self.prune_remote(dest, keep_remote)
        if self.settings.upload_keep_last_local and fresh:
            self.prune_local(self.settings.upload_keep_last_local)
        return bool(fresh)

    def prune_local(self, keep: int) -> None:
        """Delete local checkpoints beyond the newest `keep`, but only those committed at every destination."""
        uris = [d.uri for d in self.dests]
        for root in self.roots:
            names = [p.name for p in root.iterdir() if step_of(p.name) is not None and not p.name.startswith(".")]
            for name in newest_first(names)[keep:]:
                if not uris or not self.queue.committed_everywhere(str(root), name, uris):
                    continue
                path = root / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
                self.queue.forget_unit(str(root), name)
                log.info("retention: deleted local %s (committed at every destination)", name)

    def prune_remote(self, dest: Destination, keep: int) -> None:
        """Keep the newest `keep` committed checkpoints per watch dir; the marker goes first, so a prune cut
        short never leaves a marker over a half-deleted checkpoint."""
        try:
            committed: dict[str, list[str]] = {}
            for name in dest.list_markers(PROBE_TIMEOUT_SECONDS):
                found = unit_of_marker(name)
                if found and step_of(found[1]) is not None:
                    committed.setdefault(found[0], []).append(found[1])
            for prefix, units in committed.items():
                for unit in newest_first(units)[keep:]:
                    dest.delete(marker_name(prefix, unit))
                    dest.delete(prefix + unit)
                    self.queue.pruned(dest.uri, unit)
                    log.info("retention: deleted %s at %s", prefix + unit, dest.uri)
        except Exception as exc:
            log.warning("retention at %s failed: %s", dest.uri, redact(str(exc), self.secrets)[:300])

    # -- state for status and autostop --------------------------------------------------------------------
    def write_status(self) -> None:
        now = self.status_written = time.monotonic()
        rows = self.queue.pending()
        for uri in [u for u in list(self.errors) if not any(r.dest == u for r in rows)]:
            if not self.queue.to_commit(uri, SHIP_UNIT):  # nothing waits for it: the error is history
                with self.lock:
                    self.errors.pop(uri, None)
        with self.lock:
            flights = [{"dest": uri, "unit": f["unit"], "files": f["files"], "arrived": f["arrived"],
                        "bytes": f["bytes"], "sent": f["sent"],
                        "bytes_per_s": round(f["sent"] / max(now - f["started"], 1e-3))}
                       for uri, f in self.in_flight.items()]
            errors, lost = dict(self.errors), list(self.lost)
        staged = held_bytes(list(self.staging.values()))
        self.staging_peak = max(self.staging_peak, staged)
        last = self.queue.last_committed()
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
                                     "last_error": errors[d.uri].text if d.uri in errors else None,
                                     "last_committed": last.get(d.uri)} for d in self.dests},
            "disk": disk,
            "lost_locally": lost,
            "waiting": self.scanner.waiting(),
            "rescans": self.scanner.rescans,
            "snapshots": {"held_bytes": staged, "peak_bytes": self.staging_peak},
            "stopping": self.stopping.is_set(),
        }
        write_atomically(status_path(self.ctx), json.dumps(status, indent=1))


@dataclass(frozen=True)
class Failure:
    """A destination's last failure: its kind, which the uploader acts on, the exception, and the words shown in
    `podvisor status` and the queue (secrets redacted)."""

    cause: Cause
    error: BaseException
    text: str


class _Arrivals:
    """Files that arrived, recorded durable in groups (one fsync'd transaction per group)."""

    def __init__(self, queue: Queue) -> None:
        self.queue, self.flushed = queue, time.monotonic()
        self.ids: set[int] = set()
        self.waiting: list[int] = []
        self.lock = threading.Lock()

    @property
    def count(self) -> int:
        return len(self.ids)

    def add(self, row_id: int) -> None:
        with self.lock:
            self.ids.add(row_id)
            self.waiting.append(row_id)
        if time.monotonic() - self.flushed >= MARK_EVERY_SECONDS:
            self.flush()

    def recorder(self, ids: dict[FileVersion, int]) -> Callable[[FileVersion], None]:
        """The destination's `arrived` callback for one batch: its file versions by queue row."""
        return lambda version: self.add(ids[version])

    def flush(self) -> None:
        with self.lock:
            waiting, self.waiting, self.flushed = self.waiting, [], time.monotonic()
        if waiting:
            self.queue.mark(waiting, "durable")


def _renamed(root: Path, unit: str) -> bool:
    """A folder that vanished under one name and stands under another with the same step (a trainer writing
    tmp-checkpoint-100 and renaming it to checkpoint-100) was moved, not lost."""
    step = step_of(unit)
    return step is not None and root.is_dir() and any(step_of(p.name) == step for p in root.iterdir()
                                                      if p.name != unit)


def _intact(row: Row) -> bool:
    """The file shipped (its snapshot, or the file itself) is still the version that was queued."""
    try:
        stat = Path(row.source).stat()
    except OSError:
        return False
    return (stat.st_size, stat.st_mtime_ns) == (row.size, row.mtime_ns)


def main() -> None:
    from entrypoint import logs
    from entrypoint.context import current

    ctx = current()
    logs.configure(ctx.core.podvisor_log_level, "%(asctime)s.%(msecs)03d uploader %(levelname)s %(message)s",
                   datefmt="%Y-%m-%dT%H:%M:%S")
    uploader = Uploader(ctx)
    signal.signal(signal.SIGTERM, lambda *_: uploader.stop())
    signal.signal(signal.SIGINT, lambda *_: uploader.stop())
    raise SystemExit(uploader.run())
