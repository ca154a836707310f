"""file:///path: a mounted volume (RunPod network volume, Kubernetes PVC)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from services.uploader.destinations import Destination, FileVersion, Progress, VerifyError, file_hash

COPY_CHUNK = 16 << 20


class LocalDestination(Destination):
    schemes = ("file://",)

    def __init__(self, uri: str, root: Path) -> None:
        self.uri, self.root = uri, root

    @classmethod
    def from_uri(cls, uri: str, environ: dict[str, str] | None = None) -> "LocalDestination":
        path = uri.removeprefix("file://")
        if not path.startswith("/"):
            raise ValueError(f"{uri!r} has no absolute path; expected file:///absolute/path")
        return cls(uri, Path(path))

    def upload(self, files: list[FileVersion], progress: Progress) -> None:
        for version in files:
            target = self.root / version.remote
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.podvisor-partial")
            sent = 0
            with version.local.open("rb") as src, partial.open("wb") as dst:
                while block := src.read(COPY_CHUNK):
                    dst.write(block)
                    sent += len(block)
                    progress(sent)
                dst.flush()
                os.fsync(dst.fileno())
            size, sha256 = file_hash(partial)
            if (size, sha256) != (version.size, version.sha256):
                partial.unlink(missing_ok=True)
                raise VerifyError(f"{version.remote}: copy differs from the source (size {size} != {version.size} "
                                  "or sha256 mismatch); the file changed while it was read")
            os.replace(partial, target)
            _fsync_dir(target.parent)

    def list_units(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.name for p in self.root.iterdir() if not p.name.startswith(".")]

    def download(self, unit: str, target: Path) -> None:
        source = self.root / unit
        if source.is_dir():
            shutil.copytree(source, target / unit, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(".*podvisor-partial"))
        else:
            shutil.copy2(source, target / unit)

    def delete(self, unit: str) -> None:
        path = self.root / unit
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    """A rename is durable only once its directory is synced."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
