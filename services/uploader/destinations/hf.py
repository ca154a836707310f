"""hf://[datasets/|spaces/]owner/repo[@revision][/prefix] through huggingface_hub: the files of one checkpoint
go in one commit (never CommitScheduler, which uploads on a timer and can ship a half-written file)."""
from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from collections.abc import Callable
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from huggingface_hub import HfApi

from services.uploader.destinations import (Arrived, Batch, Cause, Destination, DestinationError, FileVersion,
                                            Progress, VerifyError)
from services.uploader.layout import MARKER_DIR

REPO_TYPES = {"datasets/": "dataset", "spaces/": "space", "models/": "model"}
Call = TypeVar("Call", bound=Callable[..., Any])


STATUS_CAUSES = {401: Cause.REFUSED, 403: Cause.REFUSED, 404: Cause.NOT_FOUND, 413: Cause.QUOTA, 507: Cause.QUOTA}


def _answering(method: Call) -> Call:
    """The Hub client's exceptions as typed destination failures: a Hub that does not answer is unreachable
    (the uploader backs off and probes it, like any other), a rejected token is refused, a missing repo or
    revision not found. The transport's errors are told by their class, which huggingface_hub takes from
    httpx or, in newer releases, httpx2: by name, so either one works."""
    @functools.wraps(method)
    def call(self: HfDestination, *args: Any, **kwargs: Any) -> Any:
        from huggingface_hub.errors import HfHubHTTPError

        try:
            return method(self, *args, **kwargs)
        except DestinationError:
            raise
        except Exception as exc:
            kinds = {cls.__name__ for cls in type(exc).__mro__}
            if "TimeoutException" in kinds:
                raise DestinationError(f"no answer from {self.host} for {self.stall_seconds:.0f} s",
                                       Cause.UNREACHABLE) from None
            if "ConnectError" in kinds or "NetworkError" in kinds:
                raise DestinationError(f"connection refused: {self.host}", Cause.UNREACHABLE) from None
            if isinstance(exc, HfHubHTTPError):
                status = exc.response.status_code if exc.response is not None else 0
                cause = STATUS_CAUSES.get(status, Cause.FAILED)
                raise DestinationError(f"{self.host} answered HTTP {status}: {str(exc).splitlines()[0][:200]}",
                                       cause) from None
            raise
    return call  # type: ignore[return-value]


class HfDestination(Destination):
    schemes = ("hf://",)

    def __init__(self, uri: str, repo_id: str, repo_type: str, revision: str | None, prefix: str,
                 environ: dict[str, str], private: bool = True) -> None:
        self.uri, self.repo_id, self.repo_type = uri, repo_id, repo_type
        self.revision, self.prefix, self.environ = revision, prefix.strip("/"), environ
        self.private = private
        self._api: HfApi | None = None

    @classmethod
    def from_uri(cls, uri: str, environ: dict[str, str] | None = None, private: bool = True) -> HfDestination:
        rest = uri.removeprefix("hf://")
        repo_type = "model"
        for marker, kind in REPO_TYPES.items():
            if rest.startswith(marker):
                rest, repo_type = rest.removeprefix(marker), kind
        match = re.fullmatch(r"([\w.\-]+)/([\w.\-]+)(?:@([\w.\-/]+?))?(?:/(.*))?", rest)
        if not match:
            raise ValueError(f"{uri!r} is not a Hugging Face repo; expected "
                             "hf://[datasets/|spaces/]owner/repo[@revision][/prefix]")
        owner, name, revision, prefix = match.groups()
        return cls(uri, f"{owner}/{name}", repo_type, revision, prefix or "",
                   dict(os.environ if environ is None else environ), private)

    @property
    def host(self) -> str:
        return urlsplit(self.environ.get("HF_ENDPOINT") or "https://huggingface.co").netloc

    @property
    def api(self):
        if self._api is None:
            from huggingface_hub import HfApi, get_session

            # The Hub client waits forever by default: every request here gives up after the stall time.
            get_session().timeout = self.stall_seconds

            endpoint = self.environ.get("HF_ENDPOINT") or None
            self._api = HfApi(endpoint=endpoint, token=self.environ.get("HF_TOKEN") or None)
            self._api.create_repo(self.repo_id, repo_type=self.repo_type, exist_ok=True,
                                  private=self.private)
            if self.revision:
                self._api.create_branch(self.repo_id, branch=self.revision, repo_type=self.repo_type,
                                        exist_ok=True)
        return self._api

    def _in_repo(self, remote: str) -> str:
        return f"{self.prefix}/{remote}" if self.prefix else remote

    @_answering
    def upload(self, batch: Batch, arrived: Arrived, progress: Progress) -> None:
        """One commit for the checkpoint (hf_xet moves the bytes in parallel), then every file verified."""
        from huggingface_hub import CommitOperationAdd

        operations = [CommitOperationAdd(path_in_repo=self._in_repo(v.remote), path_or_fileobj=str(v.local))
                      for v in batch.files]
        self.api.create_commit(self.repo_id, operations, commit_message=f"podvisor: checkpoint {batch.unit}",
                               repo_type=self.repo_type, revision=self.revision)
        progress(sum(v.size for v in batch.files))
        self._verify(batch.files)
        for version in batch.files:
            arrived(version)

    @_answering
    def put_bytes(self, remote: str, data: bytes) -> None:
        from huggingface_hub import CommitOperationAdd

        self.api.create_commit(self.repo_id, [CommitOperationAdd(path_in_repo=self._in_repo(remote),
                                                                 path_or_fileobj=data)],
                               commit_message=f"podvisor: commit {remote}", repo_type=self.repo_type,
                               revision=self.revision)

    @_answering
    def get_bytes(self, remote: str, timeout: float) -> bytes:
        import tempfile

        from huggingface_hub import hf_hub_download

        with tempfile.TemporaryDirectory() as folder:
            path = hf_hub_download(self.repo_id, self._in_repo(remote), repo_type=self.repo_type,
                                   revision=self.revision, local_dir=folder, token=self.environ.get("HF_TOKEN"),
                                   endpoint=self.environ.get("HF_ENDPOINT") or None, etag_timeout=timeout)
            return Path(path).read_bytes()

    @_answering
    def list_markers(self, timeout: float) -> list[str]:
        from huggingface_hub.errors import EntryNotFoundError

        try:
            entries = list(self.api.list_repo_tree(self.repo_id, path_in_repo=self._in_repo(MARKER_DIR),
                                                   recursive=True, repo_type=self.repo_type,
                                                   revision=self.revision))
        except EntryNotFoundError:
            return []
        strip = f"{self.prefix}/" if self.prefix else ""
        return sorted(e.path.removeprefix(strip) for e in entries if e.path.endswith(".json"))

    @_answering
    def sizes(self, remotes: list[str], timeout: float) -> dict[str, int]:
        strip = f"{self.prefix}/" if self.prefix else ""
        infos = self.api.get_paths_info(self.repo_id, [self._in_repo(r) for r in remotes], repo_type=self.repo_type,
                                        revision=self.revision)
        return {info.path.removeprefix(strip): info.size for info in infos if getattr(info, "size", None) is not None}

    @_answering
    def fetch(self, remotes: list[str], target: Path) -> None:
        from huggingface_hub import snapshot_download

        staging = target / ".hf"
        snapshot_download(self.repo_id, repo_type=self.repo_type, revision=self.revision, local_dir=staging,
                          allow_patterns=[self._in_repo(r) for r in remotes], token=self.environ.get("HF_TOKEN"),
                          endpoint=self.environ.get("HF_ENDPOINT") or None)
        for remote in remotes:
            (target / remote).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / self._in_repo(remote), target / remote)

    def _verify(self, files: list[FileVersion]) -> None:
        infos = {info.path: info for info in self.api.get_paths_info(
            self.repo_id, [self._in_repo(v.remote) for v in files], repo_type=self.repo_type,
            revision=self.revision)}
        for version in files:
            info = infos.get(self._in_repo(version.remote))
            if info is None:
                raise VerifyError(f"{version.remote}: not in the repo after the commit")
            if info.size != version.size:
                raise VerifyError(f"{version.remote}: repo holds {info.size} bytes, expected {version.size}")
            lfs_sha = getattr(info.lfs, "sha256", None) if info.lfs else None
            if lfs_sha and lfs_sha != version.sha256:
                raise VerifyError(f"{version.remote}: sha256 in the repo differs from the source")
            if not lfs_sha and info.blob_id and info.blob_id != _git_blob_sha1(version.local):
                raise VerifyError(f"{version.remote}: git blob id in the repo differs from the source")

    @_answering
    def delete(self, remote: str) -> None:
        """One commit removing a checkpoint (folder or single file) or a marker."""
        root = self._in_repo(remote)
        self.api.delete_files(self.repo_id, delete_patterns=[root, f"{root}/*", f"{root}/**"],
                              repo_type=self.repo_type, revision=self.revision,
                              commit_message=f"podvisor: prune {remote}")


def _git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as fh:
        while block := fh.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()
