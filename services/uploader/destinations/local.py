"""file:///path: a mounted volume (RunPod network volume, Kubernetes PVC)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from services.uploader.destinations import (Arrived, Batch, Destination, Progress, VerifyError, file_hash)
from services.uploader.layout import MARKER_DIR

COPY_CHUNK = 16 << 20


class LocalDestination(Destination):
    schemes = ("file://",)

    def __init__(self, uri: str, root: Path) -> None:
        self.uri, self.root = uri, root

    @classmethod
    def from_uri(cls, uri: str, environ: dict[str, str] | None = None) -> LocalDestination:
        path = uri.removeprefix("file://")
        if not path.startswith("/"):
            raise ValueError(f"{uri!r} has no absolute path; expected file:///absolute/path")
        return cls(uri, Path(path))

    def upload(self, batch: Batch, arrived: Arrived, progress: Progress) -> None:
        sent = 0
        for version in batch.files:
            target = self.root / version.remote
            partial = _write_partial(target, version.local, _offset(progress, sent))
            size, sha256 = file_hash(partial)
            if (size, sha256) != (version.size, version.sha256):
                partial.unlink(missing_ok=True)
                raise VerifyError(f"{version.remote}: copy differs from the source (size {size} != {version.size} "
                                  "or sha256 mismatch); the file changed while it was read")
            _commit(partial, target)
            sent += version.size
            arrived(version)

    def put_bytes(self, remote: str, data: bytes) -> None:
        target = self.root / remote
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.podvisor-partial")
        with partial.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _commit(partial, target)

    def get_bytes(self, remote: str, timeout: float) -> bytes:
        return (self.root / remote).read_bytes()

    def list_markers(self, timeout: float) -> list[str]:
        if not self.root.exists():  # a fresh volume folder: empty, not unreachable
            return []
        if not self.root.is_dir():
            raise NotADirectoryError(f"{self.root} is not a folder")
        folder = self.root / MARKER_DIR
        return sorted(p.relative_to(self.root).as_posix() for p in folder.rglob("*.json")) if folder.is_dir() else []

    def sizes(self, remotes: list[str], timeout: float) -> dict[str, int]:
        found = {}
        for remote in remotes:
            try:
                found[remote] = (self.root / remote).stat().st_size
            except FileNotFoundError:
                continue
        return found

    def fetch(self, remotes: list[str], target: Path) -> None:
        for remote in remotes:
            (target / remote).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.root / remote, target / remote)

    def delete(self, remote: str) -> None:
        path = self.root / remote
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def _offset(progress: Progress, base: int) -> Progress:
    """This file's progress as the batch's: the bytes of the files before it come first."""
    return lambda sent: progress(base + sent)


def _write_partial(target: Path, source: Path, progress: Progress) -> Path:
    """Copy to a hidden name beside the target, synced: a crash never leaves a half file under its name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.podvisor-partial")
    sent = 0
    with source.open("rb") as src, partial.open("wb") as dst:
        while block := src.read(COPY_CHUNK):
            dst.write(block)
            sent += len(block)
            progress(sent)
        dst.flush()
        os.fsync(dst.fileno())
    return partial


def _commit(partial: Path, target: Path) -> None:
    """Rename into place, then sync the folder: a rename is durable only once its directory is synced."""
    os.replace(partial, target)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
