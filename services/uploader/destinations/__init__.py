"""Upload destinations, parsed from UPLOAD_DESTINATIONS URIs. Each one uploads a checkpoint's files, proves
they arrived intact (size, and a hash where the backend keeps one), and can list, fetch and prune checkpoints."""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

Progress = Callable[[int], None]
"""Called with the bytes sent so far for the file in flight."""


@dataclass(frozen=True)
class FileVersion:
    """One complete version of a local file, and where it goes under the destination's root."""

    local: Path
    remote: str
    size: int
    sha256: str


class VerifyError(RuntimeError):
    """The destination holds something other than what was sent."""


class Destination(ABC):
    uri: str
    """The destination as the user wrote it (no secrets in it): also its key in the queue."""

    @abstractmethod
    def upload(self, files: list[FileVersion], progress: Progress) -> None:
        """Upload and verify every file of one checkpoint; raise on any failure."""

    @abstractmethod
    def list_units(self) -> list[str]:
        """Names of the checkpoints (top-level entries) at the destination."""

    @abstractmethod
    def download(self, unit: str, target: Path) -> None:
        """Fetch checkpoint `unit` into folder `target` (its parent, the watch dir)."""

    @abstractmethod
    def delete(self, unit: str) -> None:
        """Remove checkpoint `unit` from the destination."""

    def close(self) -> None:
        """Stop any transfer in flight (on a stop past its deadline)."""


def file_hash(path: Path, algorithm: str = "sha256", chunk: int = 8 << 20) -> tuple[int, str]:
    """(size, hex digest) in one read. sha256 is the queue's identity of a version (0.65 s/GB with SHA-NI);
    md5, what S3 keeps, is twice as slow, so destinations that need it hash while they transfer."""
    digest, size = hashlib.new(algorithm, usedforsecurity=False), 0
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def parse(uri: str, environ: dict[str, str] | None = None) -> Destination:
    """A Destination for `uri`; ValueError names what is wrong and the expected form."""
    from services.uploader.destinations.hf import HfDestination
    from services.uploader.destinations.local import LocalDestination
    from services.uploader.destinations.rclone import RcloneDestination

    for cls in (LocalDestination, RcloneDestination, HfDestination):
        if uri.startswith(cls.schemes):
            return cls.from_uri(uri, environ)
    raise ValueError(f"{uri!r} is not a destination URI; expected hf://owner/repo, rclone:remote:path, "
                     "s3://bucket/prefix or file:///path")
