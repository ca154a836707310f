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
    UNIQUE (dest, remote, sha256)
);
CREATE INDEX IF NOT EXISTS uploads_pending ON uploads (dest, status, next_try);
CREATE INDEX IF NOT EXISTS uploads_local ON uploads (local);
"""
PENDING = ("queued", "uploading")


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


class Queue:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
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

    def enqueue(self, dest: str, root: str, unit: str, remote: str, local: str, size: int, mtime_ns: int,
                sha256: str) -> bool:
        """Queue one version for one destination; False when that version was queued or uploaded before."""
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            # An older version of the same file still waiting can never be uploaded as it was: drop it.
            db.execute("UPDATE uploads SET status='superseded' WHERE dest=? AND remote=? AND status='queued' "
                       "AND sha256<>?", (dest, remote, sha256))
            added = db.execute(
                "INSERT OR IGNORE INTO uploads (dest, root, unit, remote, local, size, mtime_ns, sha256, "
                "enqueued_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (dest, root, unit, remote, local, size, mtime_ns, sha256, time.time())).rowcount
            if not added:
                # This content was seen before. Identical to the latest version: remember the new mtime and
                # upload nothing. Changed back after another version (A, B, A): it must go up again.
                latest = db.execute("SELECT sha256 FROM uploads WHERE dest=? AND remote=? "
                                    "ORDER BY enqueued_at DESC LIMIT 1", (dest, remote)).fetchone()
                again = latest is not None and latest[0] != sha256
                db.execute("UPDATE uploads SET mtime_ns=?, local=?, size=? WHERE dest=? AND remote=? AND sha256=?",
                           (mtime_ns, local, size, dest, remote, sha256))
                if again:
                    db.execute("UPDATE uploads SET status='queued', next_try=0, enqueued_at=? "
                               "WHERE dest=? AND remote=? AND sha256=?", (time.time(), dest, remote, sha256))
                added = int(again)
            db.execute("COMMIT")
            return bool(added)
        finally:
            db.close()

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

    def pending(self, dest: str | None = None) -> list[Row]:
        if dest is None:
            return self._rows("SELECT * FROM uploads WHERE status IN ('queued','uploading') ORDER BY id")
        return self._rows("SELECT * FROM uploads WHERE dest=? AND status IN ('queued','uploading') ORDER BY id",
                          dest)

    def rows(self) -> list[Row]:
        return self._rows("SELECT * FROM uploads ORDER BY id")

    def last_durable(self) -> dict[str, Row]:
        return {row.dest: row for row in self._rows(
            "SELECT * FROM uploads WHERE status='durable' ORDER BY durable_at")}

    def durable_everywhere(self, root: str, unit: str, dests: list[str]) -> bool:
        """Every file of checkpoint `unit` durable at every destination, and nothing of it pending."""
        rows = self._rows("SELECT * FROM uploads WHERE root=? AND unit=? AND status<>'superseded'", root, unit)
        if not rows or any(row.status in PENDING for row in rows):
            return False
        durable = {(row.dest, row.remote) for row in rows if row.status == "durable"}
        remotes = {row.remote for row in rows}
        return all((dest, remote) in durable for dest in dests for remote in remotes)

    def forget_unit(self, root: str, unit: str) -> None:
        """The checkpoint was pruned locally: keep its history, but it no longer has local files."""
        self._write("UPDATE uploads SET local='' WHERE root=? AND unit=?", root, unit)
