"""The persistent upload queue: one SQLite row per (file version, destination).

It is the uploader's memory across restarts and kill -9: a version is identified by its sha256, so it is
uploaded once per destination, and an unchanged file is never uploaded again. Rows are committed with
synchronous=FULL, so a "durable" mark survives a power cut as well as the upload it records.
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from entrypoint.steps import step_of
from services.uploader.snapshot import source_of

SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    id          INTEGER PRIMARY KEY,
    dest        TEXT NOT NULL,
    root        TEXT NOT NULL,
    unit        TEXT NOT NULL,
    remote      TEXT NOT NULL,
    local       TEXT NOT NULL,
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'queued',
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    next_try    REAL NOT NULL DEFAULT 0,
    enqueued_at REAL NOT NULL,
    durable_at  REAL,
    staging     TEXT NOT NULL DEFAULT '',
    UNIQUE (dest, remote, sha256)
);
CREATE INDEX IF NOT EXISTS uploads_pending ON uploads (dest, status, next_try);
CREATE INDEX IF NOT EXISTS uploads_local ON uploads (local);
CREATE INDEX IF NOT EXISTS uploads_remote ON uploads (dest, remote);
CREATE INDEX IF NOT EXISTS uploads_unit ON uploads (dest, root, unit, status);
CREATE TABLE IF NOT EXISTS commits (
    dest         TEXT NOT NULL,
    root         TEXT NOT NULL,
    unit         TEXT NOT NULL,
    files        INTEGER NOT NULL,
    bytes        INTEGER NOT NULL,
    committed_at REAL NOT NULL,
    PRIMARY KEY (dest, root, unit)
);
"""
PENDING = ("queued", "uploading")
MIGRATIONS = {"staging": "ALTER TABLE uploads ADD COLUMN staging TEXT NOT NULL DEFAULT ''"}
"""Columns a queue written by an older podvisor lacks, and how to add them."""


class Item(NamedTuple):
    """One file version for one destination."""

    dest: str
    root: str
    unit: str
    remote: str
    local: str
    size: int
    mtime_ns: int
    sha256: str
    staging: str = ""
    """The snapshot folder the file is shipped from ('' when it was not staged: shipped from `local`)."""


@dataclass(frozen=True)
class Row:
    id: int
    dest: str
    root: str
    unit: str
    remote: str
    local: str
    size: int
    mtime_ns: int
    sha256: str
    status: str
    attempts: int
    last_error: str | None
    next_try: float
    enqueued_at: float
    durable_at: float | None
    staging: str

    @property
    def source(self) -> str:
        """The file that is shipped: the snapshot's copy, kept until every destination committed it."""
        return source_of(self.staging, self.root, self.local)


class Queue:
    def __init__(self, path: Path) -> None:
        """Open (and on first use create) the queue. Readers (status, the stop gate) and the uploader may open it
        at the same moment: every statement waits for a lock instead of failing, and WAL mode, which lives in the
        file, is switched on only by whoever finds it off; a second opener that loses that race reads on.

        One connection stays open as long as this object lives: SQLite deletes the WAL's side files when the last
        connection closes, and a user who may only read the queue (the login user's `podvisor status`) cannot
        open a WAL database whose side files are gone; the uploader's own queue keeps them there."""
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        db = self._held = self._connect()
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            try:
                db.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError:  # another process switches it right now
                pass
        db.executescript(SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(uploads)")}
        for column, sql in MIGRATIONS.items():
            if column not in columns:
                db.execute(sql)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA busy_timeout=30000")
        db.execute("PRAGMA synchronous=FULL")
        return db

    def _rows(self, sql: str, *args: object) -> list[Row]:
        db = self._connect()
        try:
            cursor = db.cursor()
            cursor.row_factory = lambda _, values: Row(*values)
            return cursor.execute(sql, args).fetchall()
        finally:
            db.close()

    def _write(self, sql: str, *args: object) -> int:
        db = self._connect()
        try:
            return db.execute(sql, args).rowcount
        finally:
            db.close()

    def enqueue(self, items: list[Item], status: str = "queued") -> int:
        """Queue file versions in one transaction (a checkpoint is queued whole or not at all, so no worker
        can commit it half-queued); returns how many are new. `status="durable"` records versions that are
        already at their destination (a restore). A version queued or uploaded before is not queued again."""
        db = self._connect()
        added = 0
        try:
            db.execute("BEGIN IMMEDIATE")
            for item in items:
                added += self._enqueue_one(db, item, status)
            db.execute("COMMIT")
            return added
        finally:
            db.close()

    @staticmethod
    def _enqueue_one(db: sqlite3.Connection, item: Item, status: str) -> int:
        dest, root, unit, remote, local, size, mtime_ns, sha256, staging = item
        now = time.time()
        # An older version of the same file still waiting can never be uploaded as it was: drop it.
        db.execute("UPDATE uploads SET status='superseded' WHERE dest=? AND remote=? AND status='queued' "
                   "AND sha256<>?", (dest, remote, sha256))
        added = db.execute(
            "INSERT OR IGNORE INTO uploads (dest, root, unit, remote, local, size, mtime_ns, sha256, status, "
            "enqueued_at, durable_at, staging) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (dest, root, unit, remote, local, size, mtime_ns, sha256, status, now,
             now if status == "durable" else None, staging)).rowcount
        if not added:
            # This content was seen before. Identical to the latest version: remember the new mtime and
            # upload nothing. Changed back after another version (A, B, A): it must go up again.
            latest = db.execute("SELECT sha256 FROM uploads WHERE dest=? AND remote=? "
                                "ORDER BY enqueued_at DESC LIMIT 1", (dest, remote)).fetchone()
            again = latest is not None and latest[0] != sha256
            db.execute("UPDATE uploads SET mtime_ns=?, local=?, size=?, staging=? WHERE dest=? AND remote=? "
                       "AND sha256=?", (mtime_ns, local, size, staging, dest, remote, sha256))
            if again:
                db.execute("UPDATE uploads SET status=?, next_try=0, enqueued_at=? "
                           "WHERE dest=? AND remote=? AND sha256=?", (status, now, dest, remote, sha256))
            added = int(again)
        if added and status != "durable":  # the checkpoint changed: its marker there is stale until re-written
            db.execute("DELETE FROM commits WHERE dest=? AND root=? AND unit=?", (dest, root, unit))
        return added

    def known_versions(self) -> dict[str, tuple[int, int]]:
        """{local path: (size, mtime_ns)} of the newest version recorded: what need not be hashed again."""
        rows = self._rows("SELECT * FROM uploads WHERE status<>'superseded' ORDER BY id")
        return {row.local: (row.size, row.mtime_ns) for row in rows}

    def recover(self) -> int:
        """After a crash, uploads that were in flight are queued again (re-sending is idempotent)."""
        return self._write("UPDATE uploads SET status='queued' WHERE status='uploading'")

    def next_batch(self, dest: str, now: float | None = None) -> list[Row]:
        """The oldest ready row for `dest` and every other ready row of the same checkpoint (one commit)."""
        now = time.time() if now is None else now
        first = self._rows("SELECT * FROM uploads WHERE dest=? AND status='queued' AND next_try<=? "
                           "ORDER BY id LIMIT 1", dest, now)
        if not first:
            return []
        return self._rows("SELECT * FROM uploads WHERE dest=? AND status='queued' AND next_try<=? AND root=? "
                          "AND unit=? ORDER BY id", dest, now, first[0].root, first[0].unit)

    def mark(self, ids: list[int], status: str) -> None:
        marks = ",".join("?" * len(ids))
        extra = ", durable_at=?, last_error=NULL" if status == "durable" else ""
        args = [status, time.time()] if status == "durable" else [status]
        self._write(f"UPDATE uploads SET status=?{extra} WHERE id IN ({marks})", *args, *ids)

    def failed(self, ids: list[int], error: str, next_try: float) -> None:
        marks = ",".join("?" * len(ids))
        self._write(f"UPDATE uploads SET status='queued', attempts=attempts+1, last_error=?, next_try=? "
                    f"WHERE id IN ({marks})", error, next_try, *ids)

    def requeue(self, ids: list[int]) -> None:
        """A transfer cancelled by a stop: not a failure, so no attempt is counted and no backoff applies."""
        marks = ",".join("?" * len(ids))
        self._write(f"UPDATE uploads SET status='queued' WHERE status='uploading' AND id IN ({marks})", *ids)

    def retry_now(self, dest: str) -> int:
        """The destination answers again: what waits for a backoff goes now, attempts start over."""
        return self._write("UPDATE uploads SET next_try=0, attempts=0 WHERE dest=? AND status='queued'", dest)

    def pending(self, dest: str | None = None) -> list[Row]:
        if dest is None:
            return self._rows("SELECT * FROM uploads WHERE status IN ('queued','uploading') ORDER BY id")
        return self._rows("SELECT * FROM uploads WHERE dest=? AND status IN ('queued','uploading') ORDER BY id",
                          dest)

    def rows(self) -> list[Row]:
        return self._rows("SELECT * FROM uploads ORDER BY id")

    def to_commit(self, dest: str, skip: str) -> list[tuple[str, str, list[Row]]]:
        """Checkpoints (root, unit, their rows) whose every file is durable at `dest` in its latest version and
        whose marker is not written yet (unit `skip`, podvisor's own files, is never a checkpoint). A checkpoint
        one of whose files was last dropped (changed or vanished before it was shipped) waits for that file's
        next version: a marker never lists fewer files than the checkpoint had."""
        db = self._connect()
        try:  # the checkpoints with something durable here, no marker and nothing pending: a few, by the index
            candidates = db.execute(
                "SELECT DISTINCT u.root, u.unit FROM uploads u WHERE u.dest=? AND u.status='durable' AND u.unit<>? "
                "AND NOT EXISTS (SELECT 1 FROM commits c WHERE c.dest=u.dest AND c.root=u.root AND c.unit=u.unit) "
                "AND NOT EXISTS (SELECT 1 FROM uploads p WHERE p.dest=u.dest AND p.root=u.root AND p.unit=u.unit "
                "AND p.status IN ('queued','uploading'))", (dest, skip)).fetchall()
        finally:
            db.close()
        rows = [row for root, unit in candidates for row in self._rows(
            "SELECT * FROM uploads WHERE dest=? AND root=? AND unit=? ORDER BY remote, enqueued_at, id",
            dest, root, unit)]
        units: dict[tuple[str, str], dict[str, Row]] = {}
        for row in rows:  # the latest version of each file
            units.setdefault((row.root, row.unit), {})[row.remote] = row
        return [(root, unit, list(files.values())) for (root, unit), files in units.items()
                if all(row.status == "durable" for row in files.values())]

    def lose(self, dest: str, root: str, unit: str) -> int:
        """Checkpoint `unit` can never be whole at `dest` (its files vanished before they were shipped): its rows
        leave the queue as lost, so nothing waits for it and no marker is ever written for it."""
        return self._write("UPDATE uploads SET status='lost' WHERE dest=? AND root=? AND unit=? "
                           "AND status IN ('queued','uploading','durable')", dest, root, unit)

    def staging_in_use(self) -> set[str]:
        """Snapshot folders an upload still needs: queued, in flight, or arrived where no marker is written."""
        db = self._connect()
        try:
            return {folder for (folder,) in db.execute(
                "SELECT DISTINCT u.staging FROM uploads u WHERE u.staging<>'' AND (u.status IN "
                "('queued','uploading') OR (u.status='durable' AND NOT EXISTS (SELECT 1 FROM commits c "
                "WHERE c.dest=u.dest AND c.root=u.root AND c.unit=u.unit)))")}
        finally:
            db.close()

    def commit(self, dest: str, root: str, unit: str, files: int, size: int) -> None:
        self._write("INSERT OR REPLACE INTO commits (dest, root, unit, files, bytes, committed_at) "
                    "VALUES (?,?,?,?,?,?)", dest, root, unit, files, size, time.time())

    def uncommitted(self, skip: str) -> int:
        """Checkpoints with every file queued or durable somewhere but no marker yet at that destination."""
        return self._without_marker(skip, per_destination=True)

    def committed_nowhere(self, skip: str) -> int:
        """Checkpoints no destination holds a marker of: what a stop would lose if the local disk goes."""
        return self._without_marker(skip, per_destination=False)

    def _without_marker(self, skip: str, per_destination: bool) -> int:
        """Queued or uploaded checkpoints (unit `skip` aside) with no commit marker: counted per destination
        (the marker missing there), or per checkpoint (missing everywhere)."""
        group, same_dest = ("dest, root, unit", "c.dest=u.dest AND ") if per_destination else ("root, unit", "")
        db = self._connect()
        try:
            return db.execute(
                f"SELECT COUNT(*) FROM (SELECT DISTINCT {group} FROM uploads u WHERE u.unit<>? "
                "AND u.status IN ('queued','uploading','durable') AND NOT EXISTS (SELECT 1 FROM commits c WHERE "
                f"{same_dest}c.root=u.root AND c.unit=u.unit))", (skip,)).fetchone()[0]
        finally:
            db.close()

    def last_committed(self) -> dict[str, dict]:
        """{dest: {"unit", "at_epoch", "files", "bytes"}} of the highest step committed at each destination (what
        a restore would bring back), the newest commit where no name carries a step."""
        db = self._connect()
        try:
            rows = db.execute("SELECT dest, unit, committed_at, files, bytes FROM commits")
            best: dict[str, dict] = {}
            for dest, unit, at, files, size in rows:
                entry = {"unit": unit, "step": step_of(unit), "at_epoch": at, "files": files, "bytes": size}
                best[dest] = max(best.get(dest, entry), entry, key=_restore_order)
            return best
        finally:
            db.close()

    def committed_everywhere(self, root: str, unit: str, dests: list[str]) -> bool:
        """Checkpoint `unit` committed (marker written) at every destination, and nothing of it pending."""
        rows = self._rows("SELECT * FROM uploads WHERE root=? AND unit=? AND status IN ('queued','uploading')",
                          root, unit)
        db = self._connect()
        try:
            done = {d for (d,) in db.execute("SELECT dest FROM commits WHERE root=? AND unit=?", (root, unit))}
        finally:
            db.close()
        return not rows and all(dest in done for dest in dests)

    def pruned(self, dest: str, unit: str) -> None:
        """Retention deleted checkpoint `unit` at `dest`: it is neither durable nor committed there now."""
        self._write("UPDATE uploads SET status='pruned' WHERE dest=? AND unit=? AND status='durable'", dest, unit)
        self._write("DELETE FROM commits WHERE dest=? AND unit=?", dest, unit)

    def forget_unit(self, root: str, unit: str) -> None:
        """The checkpoint was pruned locally: keep its history, but it no longer has local files."""
        self._write("UPDATE uploads SET local='' WHERE root=? AND unit=?", root, unit)


def _restore_order(commit: dict) -> tuple[bool, int, float]:
    """Which commit a restore prefers: one with a step over one without, the higher step, then the newer."""
    return commit["step"] is not None, commit["step"] or 0, commit["at_epoch"]
