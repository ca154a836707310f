"""Versioned datasets on the Hugging Face Hub: `podvisor data publish` writes NAME/<version>/ in a dataset repo
with a manifest (files, sizes, sha256, row counts of .jsonl) and checksums.sha256, many small files bundled in one
.tar.gz; `podvisor data fetch` and the pod's DATASETS step download a version, check every checksum, extract and
only then put it in place. A version is never rewritten, so a version name is a cache key: a pod that restarts
finds it on the volume and downloads nothing."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from typing import Any
from pathlib import Path

ARCHIVE = "data.tar.gz"
MANIFEST = "manifest.json"
CHECKSUMS = "checksums.sha256"
PLACED = ".podvisor-manifest.json"
"""Written last into a fetched version's folder: its presence says the folder is complete and verified."""
BUNDLE_OVER_FILES = 64
"""`--archive auto` bundles a folder of more files than this: one object instead of thousands of small ones."""
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_URI = re.compile(r"hf://datasets/(?P<repo>[^/@]+/[^/@]+)/(?P<name>[^@]+?)/?(?:@(?P<version>[^/]+))?")


class DatasetError(Exception):
    """One line naming the dataset, the file and what is wrong with it."""


@dataclass(frozen=True)
class DatasetRef:
    repo_id: str
    name: str
    version: str | None
    """None or "latest": the newest published version."""

    @classmethod
    def parse(cls, uri: str) -> DatasetRef:
        match = _URI.fullmatch(uri.strip())
        if not match:
            raise DatasetError(f"{uri!r} is not a dataset address; expected hf://datasets/OWNER/REPO/NAME[@VERSION]")
        version = match["version"]
        if version not in (None, "latest") and not _VERSION.fullmatch(version):
            raise DatasetError(f"{uri!r}: version {version!r} may hold only letters, digits, '.', '_' and '-'")
        return cls(match["repo"], match["name"].strip("/"), version)

    def __str__(self) -> str:
        return f"hf://datasets/{self.repo_id}/{self.name}" + (f"@{self.version}" if self.version else "")


def _api():
    from huggingface_hub import HfApi

    return HfApi()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_files(folder: Path) -> list[dict]:
    """Every regular file under `folder`, sorted: path, size, sha256, and rows for JSON Lines."""
    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        entry = {"path": path.relative_to(folder).as_posix(), "size": path.stat().st_size, "sha256": sha256_of(path)}
        if path.suffix == ".jsonl":
            with path.open("rb") as f:
                entry["rows"] = sum(1 for line in f if line.strip())
        out.append(entry)
    return out


def new_version() -> str:
    """A UTC timestamp: versions sort by name in the order they were published."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def published(repo_id: str, prefix: str) -> dict[str, list[str]]:
    """{dataset name: its versions, oldest first} for every dataset under `prefix` (itself one, or a folder of
    them): a version is a folder NAME/VERSION/ that holds a manifest. The one reading of the repo's layout."""
    from huggingface_hub.errors import EntryNotFoundError

    try:
        entries = list(_api().list_repo_tree(repo_id, path_in_repo=prefix, recursive=True, repo_type="dataset"))
    except EntryNotFoundError:
        return {}
    found: dict[str, set[str]] = {}
    for entry in entries:
        if entry.path.endswith(f"/{MANIFEST}") and entry.path.count("/") >= 2:
            name, version = entry.path.rsplit("/", 2)[:2]
            found.setdefault(name, set()).add(version)
    return {name: sorted(seen) for name, seen in found.items()}


def versions(ref: DatasetRef) -> list[str]:
    """Published versions of `ref.name`, oldest first."""
    return published(ref.repo_id, ref.name).get(ref.name, [])


def resolve(ref: DatasetRef) -> str:
    if ref.version not in (None, "latest"):
        return ref.version
    published = versions(ref)
    if not published:
        raise DatasetError(f"{ref}: no version published in {ref.repo_id} (`podvisor data publish` makes one)")
    return published[-1]


def publish(folder: Path, ref: DatasetRef, version: str | None = None, archive: str = "auto") -> dict:
    """One commit adding NAME/<version>/: the files (or their bundle), the manifest and the checksums."""
    from huggingface_hub import CommitOperationAdd

    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder")
    version = version or new_version()
    if not _VERSION.fullmatch(version):
        raise DatasetError(f"version {version!r} may hold only letters, digits, '.', '_' and '-'")
    files = describe_files(folder)
    if not files:
        raise DatasetError(f"{folder} holds no files")
    api = _api()
    api.create_repo(ref.repo_id, repo_type="dataset", private=True, exist_ok=True)
    if version in versions(ref):
        raise DatasetError(f"{ref.name}@{version} is already published in {ref.repo_id}; versions are never rewritten")
    bundle = archive == "tar.gz" or (archive == "auto" and len(files) > BUNDLE_OVER_FILES)
    base = f"{ref.name}/{version}"
    manifest = {"format": 1, "name": ref.name, "version": version, "repo": ref.repo_id,
                "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "archive": ARCHIVE if bundle else None, "files": files,
                "total_bytes": sum(f["size"] for f in files), "rows": sum(f.get("rows", 0) for f in files)}
    manifest_bytes = json.dumps(manifest, indent=1).encode()
    with tempfile.TemporaryDirectory(prefix="podvisor-publish-") as staging:
        if bundle:
            payload = [(ARCHIVE, _bundle(folder, files, Path(staging) / ARCHIVE))]
        else:
            payload = [(f["path"], folder / f["path"]) for f in files]
        sums = {name: sha256_of(path) for name, path in payload}
        sums[MANIFEST] = hashlib.sha256(manifest_bytes).hexdigest()
        checksums = "".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items())).encode()
        operations = [CommitOperationAdd(f"{base}/{name}", str(path)) for name, path in payload]
        operations += [CommitOperationAdd(f"{base}/{MANIFEST}", manifest_bytes),
                       CommitOperationAdd(f"{base}/{CHECKSUMS}", checksums)]
        api.create_commit(ref.repo_id, operations, commit_message=f"podvisor: dataset {ref.name}@{version}",
                          repo_type="dataset")
    return manifest


def _bundle(folder: Path, files: list[dict], target: Path) -> Path:
    with tarfile.open(target, "w:gz", compresslevel=6) as tar:
        for entry in files:
            tar.add(folder / entry["path"], arcname=entry["path"], recursive=False)
    return target


def fetch(ref: DatasetRef, dest: Path, version: str | None = None) -> dict:
    """Download `version` (default: ref's, else the newest) into `dest`, verified; returns its manifest. `dest`
    is replaced only once everything checked out, so a failed fetch leaves nothing half there."""
    from huggingface_hub import snapshot_download

    version = version or resolve(ref)
    base = f"{ref.name}/{version}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".podvisor-fetch-", dir=dest.parent) as staging:
        download = Path(staging) / "download"
        snapshot_download(ref.repo_id, repo_type="dataset", allow_patterns=[f"{base}/*"], local_dir=download)
        got = download / base
        if not (got / MANIFEST).exists():
            raise DatasetError(f"{ref.name}@{version}: not published in {ref.repo_id} (no {MANIFEST})")
        _check_sums(got, ref, version)
        manifest = json.loads((got / MANIFEST).read_text())
        placed = Path(staging) / "placed"
        if manifest.get("archive"):
            _extract(got / manifest["archive"], placed, ref, version)
        else:
            placed.mkdir()
            for entry in manifest["files"]:
                (placed / entry["path"]).parent.mkdir(parents=True, exist_ok=True)
                os.replace(got / entry["path"], placed / entry["path"])
        _check_files(placed, manifest, ref, version)
        (placed / PLACED).write_text(json.dumps({**manifest, "source": f"hf://datasets/{ref.repo_id}/{ref.name}"}))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(placed, dest)
    return manifest


def _extract(archive: Path, target: Path, ref: DatasetRef, version: str) -> None:
    """Regular files and folders only, each inside `target` (what tarfile's "data" filter allows, which this
    Python may predate): a bundle is checksummed, but its publisher is not the pod's to trust with paths."""
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            inside = (target / member.name).resolve().is_relative_to(target.resolve())
            if not (member.isfile() or member.isdir()) or not inside or member.name.startswith("/"):
                raise DatasetError(f"{ref.name}@{version}: {archive.name} holds {member.name!r}, which is not a plain "
                                   "file inside the dataset")
        tar.extractall(target, members=members)


def _check_sums(folder: Path, ref: DatasetRef, version: str) -> None:
    sums = folder / CHECKSUMS
    if not sums.exists():
        raise DatasetError(f"{ref.name}@{version}: {CHECKSUMS} is missing")
    for line in sums.read_text().splitlines():
        digest, name = line.split("  ", 1)
        path = folder / name
        if not path.exists():
            raise DatasetError(f"{ref.name}@{version}: {name} is listed in {CHECKSUMS} but was not downloaded")
        if sha256_of(path) != digest:
            raise DatasetError(f"{ref.name}@{version}: {name} is corrupt (its sha256 is not the published one)")


def _check_files(folder: Path, manifest: dict, ref: DatasetRef, version: str) -> None:
    for entry in manifest["files"]:
        path = folder / entry["path"]
        if not path.is_file():
            raise DatasetError(f"{ref.name}@{version}: {entry['path']} is missing")
        if path.stat().st_size != entry["size"] or sha256_of(path) != entry["sha256"]:
            raise DatasetError(f"{ref.name}@{version}: {entry['path']} is corrupt (size or sha256 differs)")


def fetch_all_latest(prefix: DatasetRef, dest: Path) -> dict:
    """The newest version of every dataset under the prefix, each in dest/<its name below the prefix>, and an
    aggregate manifest at dest/manifest.json."""
    found = {name: seen[-1] for name, seen in published(prefix.repo_id, prefix.name).items()}
    if not found:
        raise DatasetError(f"{prefix}: no dataset published under it")
    fetched: list[dict[str, Any]] = []
    aggregate = {"source": str(prefix), "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "datasets": fetched}
    for name, version in sorted(found.items()):
        below = name[len(prefix.name):].strip("/") or Path(name).name
        manifest = fetch(DatasetRef(prefix.repo_id, name, version), dest / below)
        fetched.append({"name": name, "version": version, "path": below,
                                      "files": len(manifest["files"]), "total_bytes": manifest["total_bytes"],
                                      "rows": manifest.get("rows", 0)})
    (dest / MANIFEST).write_text(json.dumps(aggregate, indent=1))
    return aggregate


def cached_versions(root: Path) -> list[str]:
    """Complete, verified versions already on the volume under root (DATASETS_DIR/NAME), oldest first."""
    return sorted(p.parent.name for p in root.glob(f"*/{PLACED}")) if root.is_dir() else []
