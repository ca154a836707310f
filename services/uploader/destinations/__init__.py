"""Upload destinations, parsed from UPLOAD_DESTINATIONS URIs. Each one ships a whole checkpoint in one
transfer, reports each file as it arrives verified (size, and a hash where the backend keeps one), writes and
reads small objects (the commit markers), lists markers, and fetches or prunes checkpoints."""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from collections.abc import Callable

Progress = Callable[[int], None]
"""Called with the bytes sent so far for the checkpoint in flight."""


@dataclass(frozen=True)
class FileVersion:
    """One complete version of a local file, and where it goes under the destination's root."""

    local: Path
    remote: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Batch:
    """The files of one checkpoint (all of it, or what is left of it) bound for one destination."""

    root: Path
    """The watch dir they are in."""
    prefix: str
    """The watch dir's folder at the destination ('' or 'name/')."""
    unit: str
    files: list[FileVersion]

    def relative(self, version: FileVersion) -> str:
        return version.local.relative_to(self.root).as_posix()


Arrived = Callable[[FileVersion], None]
"""Called once a file of the batch is at the destination and verified."""


class Cause(StrEnum):
    """What kind of failure a destination had: the uploader acts on this (an unreachable destination is probed
    until it answers, then everything waiting goes at once), never on the message's words."""

    UNREACHABLE = "unreachable"
    """Connection refused, host not found, no answer within the stall time."""
    REFUSED = "refused"
    """Credentials rejected or access denied (401, 403)."""
    NOT_FOUND = "not found"
    """No such bucket, repo, revision or path."""
    QUOTA = "quota"
    """Out of space or quota."""
    CORRUPT = "corrupt"
    """The destination holds something other than what was sent."""
    FAILED = "failed"
    """Anything else the backend reported."""


class DestinationError(RuntimeError):
    """The destination failed or did not answer: `cause` is its kind, the message the backend's words."""

    def __init__(self, message: str, cause: Cause = Cause.FAILED) -> None:
        super().__init__(message)
        self.cause = cause


class VerifyError(DestinationError):
    """The destination holds something other than what was sent."""

    def __init__(self, message: str) -> None:
        super().__init__(message, Cause.CORRUPT)


def cause_of(exc: BaseException) -> Cause:
    """The kind of any failure of a destination call: a DestinationError says it; anything else (a bug, a
    backend exception no destination mapped) is a plain failure."""
    return exc.cause if isinstance(exc, DestinationError) else Cause.FAILED


STALL_SECONDS = 30.0


class Destination(ABC):
    uri: str
    """The destination as the user wrote it (no secrets in it): also its key in the queue."""
    stall_seconds: float = STALL_SECONDS
    """A transfer that moves nothing for this long is cut and fails (UPLOAD_STALL_SECONDS)."""

    @abstractmethod
    def upload(self, batch: Batch, arrived: Arrived, progress: Progress) -> None:
        """Ship every file of the batch, calling `arrived` for each verified one; raise on any failure."""

    @abstractmethod
    def put_bytes(self, remote: str, data: bytes) -> None:
        """Write a small object (a commit marker) durably."""

    @abstractmethod
    def get_bytes(self, remote: str, timeout: float) -> bytes:
        """Read a small object."""

    @abstractmethod
    def list_markers(self, timeout: float) -> list[str]:
        """Paths (under the root) of every commit marker; raise when the destination cannot be listed:
        an unreachable destination is never taken for an empty one."""

    @abstractmethod
    def sizes(self, remotes: list[str], timeout: float) -> dict[str, int]:
        """{remote: size} of those of `remotes` the destination holds now: the proof of arrival a marker needs
        (a file the destination does not list is not there, whatever the transfer said)."""

    @abstractmethod
    def fetch(self, remotes: list[str], target: Path) -> None:
        """Download exactly these files to `target/<remote>`."""

    @abstractmethod
    def delete(self, remote: str) -> None:
        """Remove `remote` (a checkpoint folder, a file, a marker) from the destination."""

    def probe(self, timeout: float) -> None:
        """Raise unless the destination answers (a cheap listing)."""
        self.list_markers(timeout)

    def cleanup(self) -> None:  # noqa: B027 - a destination with nothing to clean up keeps this one
        """At start: drop partial uploads a killed uploader left behind (billed on S3)."""

    def close(self) -> None:  # noqa: B027 - a destination whose calls cannot hang keeps this one
        """Stop any transfer in flight (on a stop past its deadline)."""


def file_hash(path: Path, algorithm: str = "sha256", chunk: int = 8 << 20) -> tuple[int, str]:
    """(size, hex digest) in one read; sha256 is the queue's and the marker's identity of a version."""
    digest, size = hashlib.new(algorithm, usedforsecurity=False), 0
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def parse(uri: str, environ: dict[str, str] | None = None, hf_private: bool = True) -> Destination:
    """A Destination for `uri`; ValueError names what is wrong and the expected form."""
    from services.uploader.destinations.hf import HfDestination
    from services.uploader.destinations.local import LocalDestination
    from services.uploader.destinations.rclone import RcloneDestination

    if uri.startswith(HfDestination.schemes):
        return HfDestination.from_uri(uri, environ, hf_private)
    for cls in (LocalDestination, RcloneDestination):
        if uri.startswith(cls.schemes):
            return cls.from_uri(uri, environ)
    raise ValueError(f"{uri!r} is not a destination URI; expected hf://owner/repo, rclone:remote:path, "
                     "s3://bucket/prefix or file:///path")
