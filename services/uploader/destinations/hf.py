"""hf://[datasets/|spaces/]owner/repo[@revision][/prefix] through huggingface_hub: the files of one checkpoint
go in one commit (never CommitScheduler, which uploads on a timer and can ship a half-written file)."""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from services.uploader.destinations import Destination, FileVersion, Progress, VerifyError

REPO_TYPES = {"datasets/": "dataset", "spaces/": "space", "models/": "model"}


class HfDestination(Destination):
    schemes = ("hf://",)

    def __init__(self, uri: str, repo_id: str, repo_type: str, revision: str | None, prefix: str,
                 environ: dict[str, str]) -> None:
        self.uri, self.repo_id, self.repo_type = uri, repo_id, repo_type
        self.revision, self.prefix, self.environ = revision, prefix.strip("/"), environ
        self._api = None

    @classmethod
    def from_uri(cls, uri: str, environ: dict[str, str] | None = None) -> "HfDestination":
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
        return cls(uri, f"{owner}/{name}", repo_type, revision, prefix or "", dict(os.environ if environ is None
                                                                                    else environ))

    @property
    def api(self):
        if self._api is None:
            from huggingface_hub import HfApi

            endpoint = self.environ.get("HF_ENDPOINT") or None
            self._api = HfApi(endpoint=endpoint, token=self.environ.get("HF_TOKEN") or None)
            self._api.create_repo(self.repo_id, repo_type=self.repo_type, exist_ok=True,
                                  private=self.environ.get("UPLOAD_HF_PRIVATE", "true").lower() in ("1", "true", "yes", "on"))
            if self.revision:
                self._api.create_branch(self.repo_id, branch=self.revision, repo_type=self.repo_type,
                                        exist_ok=True)
        return self._api

    def _in_repo(self, remote: str) -> str:
        return f"{self.prefix}/{remote}" if self.prefix else remote

    def upload(self, files: list[FileVersion], progress: Progress) -> None:
        from huggingface_hub import CommitOperationAdd

        operations = [CommitOperationAdd(path_in_repo=self._in_repo(v.remote), path_or_fileobj=str(v.local))
                      for v in files]
        unit = files[0].remote.split("/")[0]
        self.api.create_commit(self.repo_id, operations, commit_message=f"podvisor: checkpoint {unit}",
                               repo_type=self.repo_type, revision=self.revision)
        progress(sum(v.size for v in files))
        self._verify(files)

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

    def list_units(self) -> list[str]:
        entries = self.api.list_repo_tree(self.repo_id, path_in_repo=self.prefix or None,
                                          repo_type=self.repo_type, revision=self.revision)
        names = [entry.path.removeprefix(f"{self.prefix}/" if self.prefix else "") for entry in entries]
        return [n for n in names if not n.startswith(".")]

    def download(self, unit: str, target: Path) -> None:
        from huggingface_hub import snapshot_download

        root = self._in_repo(unit)
        staging = target / ".hf"
        snapshot_download(self.repo_id, repo_type=self.repo_type, revision=self.revision, local_dir=staging,
                          allow_patterns=[root, f"{root}/*", f"{root}/**"], token=self.environ.get("HF_TOKEN"),
                          endpoint=self.environ.get("HF_ENDPOINT") or None)
        os.replace(staging / root, target / unit)

    def delete(self, unit: str) -> None:
        """One commit removing the checkpoint, whether it is a folder or a single file."""
        root = self._in_repo(unit)
        self.api.delete_files(self.repo_id, delete_patterns=[root, f"{root}/*", f"{root}/**"],
                              repo_type=self.repo_type, revision=self.revision,
                              commit_message=f"podvisor: prune {unit}")


def _git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as fh:
        while block := fh.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()
