"""Each checkpoint file is hashed as soon as it is written (closed, or found already quiet), on a small pool of
threads, not once its whole checkpoint has settled. The sha256 that the queue and the marker need is then ready,
or nearly, when the checkpoint is complete, and it was read from the page cache the trainer has just filled: for
a checkpoint written file by file in the watch dir, all but its last file's hashing (0.8 s per GB here) no longer
sits between "complete" and "uploading". A folder renamed in whole is hashed from first sight, during the settle.

A hash is kept by the file's inode, with the size and mtime it had before and after the read. A rename (the HF
Trainer's tmp-checkpoint-N -> checkpoint-N) or the snapshot's hard link keeps it; any write makes it not match,
and the file is read again when it is queued, as it always was."""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from services.uploader.destinations import file_hash

KEPT = 20_000
"""Hashes kept for files not queued yet (about 200 bytes each); the oldest go first beyond this."""
Version = tuple[int, int, int, int]
"""(device, inode, size, mtime_ns): one version of one file, under whatever names it has."""


def _version(path: str) -> Version:
    info = os.stat(path)
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


class Hashes:
    def __init__(self, threads: int) -> None:
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="hash")
        self.done: dict[Version, str] = {}
        self.running: dict[Version, Future[str | None]] = {}
        self.lock = threading.Lock()

    def early(self, path: str) -> None:
        """Start hashing `path` in the background, unless this version of it is hashed or being hashed."""
        try:
            version = _version(path)
        except OSError:
            return  # gone already (a temp file renamed away): its new name is seen on its own
        with self.lock:
            if version not in self.done and version not in self.running:
                self.running[version] = self.pool.submit(self._hash, path, version)

    def _hash(self, path: str, version: Version) -> str | None:
        """The digest, kept only when the file read is the version asked for from start to end."""
        try:
            size, digest = file_hash(Path(path))
            intact = size == version[2] and _version(path) == version
        except OSError:
            intact = False
        with self.lock:
            self.running.pop(version, None)
            if not intact:
                return None
            self.done[version] = digest
            while len(self.done) > KEPT:
                del self.done[next(iter(self.done))]
        return digest

    def of(self, path: str) -> tuple[int, str]:
        """(size, sha256) of `path` as it is now: an early hash of this very version, the one under way, or a read
        now. A hash used here is forgotten: a version is queued once."""
        version = _version(path)
        with self.lock:
            digest = self.done.pop(version, None)
            running = self.running.get(version)
        if digest is None and running is not None:
            digest = running.result()
            with self.lock:
                self.done.pop(version, None)
        if digest is not None:
            return version[2], digest
        return file_hash(Path(path))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
