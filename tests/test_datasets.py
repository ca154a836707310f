"""Versioned datasets on the Hub through the real `podvisor data` command and huggingface_hub, against the
loopback Hub stand-in (tests/fakehub.py, HF_ENDPOINT): what a publish commits, a fetch that checks every checksum
and names the corrupt file, --latest and --all-latest, and the pod's DATASETS step that runs before the job, once
per version."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from conftest import PODVISOR, base_env, wait_for
from fakehub import FakeHub

HF_TOKEN = "hf_datasetstest0123456789abcdef"
REPO = "owner/corpora"


@pytest.fixture
def hub():
    server = FakeHub()
    yield server
    server.close()


def data(hub, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": HF_TOKEN, "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "HF_HUB_CACHE": "/nonexistent-cache-must-not-be-used"}
    result = subprocess.run([PODVISOR, "data", *argv], env=env, capture_output=True, text=True, timeout=120)
    assert HF_TOKEN not in result.stdout + result.stderr
    return result


def make_folder(root, files: dict[str, bytes]):
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


def test_publish_commits_files_manifest_and_checksums_once(hub, tmp_path):
    train_rows = b'{"x": 1}\n{"x": 2}\n\n{"x": 3}\n'
    folder = make_folder(tmp_path / "src", {"train.jsonl": train_rows, "sub/b.bin": b"\0" * 999, "README.md": b"# corpus\n"})
    result = data(hub, "publish", str(folder), f"hf://datasets/{REPO}/wiki", "--version", "v1", "--archive", "none")
    assert result.returncode == 0, result.stderr
    assert len(hub.commits) == 1
    assert sorted(hub.commits[0]["paths"]) == ["wiki/v1/README.md", "wiki/v1/checksums.sha256", "wiki/v1/manifest.json",
                                               "wiki/v1/sub/b.bin", "wiki/v1/train.jsonl"]
    manifest = json.loads(hub.files["wiki/v1/manifest.json"])
    train = next(f for f in manifest["files"] if f["path"] == "train.jsonl")
    assert hub.files["wiki/v1/train.jsonl"] == train_rows
    assert train == {"path": "train.jsonl", "size": len(train_rows), "sha256": hashlib.sha256(train_rows).hexdigest(),
                     "rows": 3}
    sums = dict(line.split("  ")[::-1] for line in hub.files["wiki/v1/checksums.sha256"].decode().splitlines())
    assert sums["manifest.json"] == hashlib.sha256(hub.files["wiki/v1/manifest.json"]).hexdigest()
    created = [json.loads(r["body"]) for r in hub.requests if r["path"] == "/api/repos/create"]
    assert created[0]["type"] == "dataset" and (created[0].get("private") is True or created[0].get("visibility") == "private")
    assert all(r["headers"].get("authorization", r["headers"].get("Authorization")) == f"Bearer {HF_TOKEN}"
               for r in hub.requests if r["method"] == "POST")
    again = data(hub, "publish", str(folder), f"hf://datasets/{REPO}/wiki", "--version", "v1")
    assert again.returncode == 1 and "already published" in again.stderr and len(hub.commits) == 1


def test_many_small_files_travel_as_one_bundle_and_come_back_verified(hub, tmp_path):
    files = {f"shard/{i:04d}.txt": f"row {i}\n".encode() * 10 for i in range(300)}
    folder = make_folder(tmp_path / "src", files)
    assert data(hub, "publish", str(folder), f"hf://datasets/{REPO}/small", "--version", "v1").returncode == 0
    assert sorted(hub.commits[0]["paths"]) == ["small/v1/checksums.sha256", "small/v1/data.tar.gz", "small/v1/manifest.json"]
    dest = tmp_path / "dest"
    result = data(hub, "fetch", f"hf://datasets/{REPO}/small", "--latest", str(dest))
    assert result.returncode == 0, result.stderr
    assert {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*.txt")} == files
    assert "small@v1: 300 file(s)" in result.stdout


def test_fetch_takes_the_newest_version_and_a_pinned_one(hub, tmp_path):
    for version, text in (("20260101T000000Z", b"old"), ("20260301T000000Z", b"new")):
        folder = make_folder(tmp_path / version, {"a.txt": text})
        assert data(hub, "publish", str(folder), f"hf://datasets/{REPO}/wiki", "--version", version).returncode == 0
    assert data(hub, "fetch", f"hf://datasets/{REPO}/wiki", "--latest", str(tmp_path / "l")).returncode == 0
    assert (tmp_path / "l" / "a.txt").read_bytes() == b"new"
    assert data(hub, "fetch", f"hf://datasets/{REPO}/wiki", "--version", "20260101T000000Z", str(tmp_path / "p")).returncode == 0
    assert (tmp_path / "p" / "a.txt").read_bytes() == b"old"


@pytest.mark.parametrize("archive", ["none", "tar.gz"])
def test_a_corrupted_file_is_named_and_nothing_is_put_in_place(hub, tmp_path, archive):
    folder = make_folder(tmp_path / "src", {"a.txt": b"alpha" * 100, "b.txt": b"beta" * 100})
    assert data(hub, "publish", str(folder), f"hf://datasets/{REPO}/wiki", "--version", "v1", "--archive", archive).returncode == 0
    name = "a.txt" if archive == "none" else "data.tar.gz"
    stored = bytearray(hub.files[f"wiki/v1/{name}"])
    stored[10] ^= 0xFF  # same size, one byte changed
    hub.files[f"wiki/v1/{name}"] = bytes(stored)
    dest = tmp_path / "dest"
    result = data(hub, "fetch", f"hf://datasets/{REPO}/wiki", "--version", "v1", str(dest))
    assert result.returncode == 1
    assert f"wiki@v1: {name} is corrupt" in result.stderr
    assert not dest.exists() and not list(tmp_path.glob(".podvisor-fetch-*"))


def test_all_latest_fetches_every_dataset_under_a_prefix_with_an_aggregate_manifest(hub, tmp_path):
    for name, version, rows in (("corpora/en", "v1", 1), ("corpora/en", "v2", 2), ("corpora/de", "v1", 3)):
        folder = make_folder(tmp_path / name / version, {"rows.jsonl": b"{}\n" * rows})
        assert data(hub, "publish", str(folder), f"hf://datasets/{REPO}/{name}", "--version", version).returncode == 0
    dest = tmp_path / "all"
    result = data(hub, "fetch", "--all-latest", f"hf://datasets/{REPO}/corpora", str(dest))
    assert result.returncode == 0, result.stderr
    aggregate = json.loads((dest / "manifest.json").read_text())
    assert [(d["name"], d["version"], d["rows"]) for d in aggregate["datasets"]] == [("corpora/de", "v1", 3),
                                                                                      ("corpora/en", "v2", 2)]
    assert (dest / "en" / "rows.jsonl").read_bytes() == b"{}\n" * 2


def test_an_unreachable_hub_ends_in_one_line_and_nothing_is_placed(open_tmp):
    from conftest import free_port

    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}", "HF_TOKEN": HF_TOKEN,
           "HF_HUB_ETAG_TIMEOUT": "2", "HF_HUB_DOWNLOAD_TIMEOUT": "2"}
    result = subprocess.run([PODVISOR, "data", "fetch", f"hf://datasets/{REPO}/wiki", str(open_tmp / "d")], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    # huggingface_hub says each of its retries; the verdict is the last line, ours.
    assert result.stderr.strip().splitlines()[-1].startswith("podvisor data: ConnectError: "), result.stderr
    assert "Traceback" not in result.stderr and HF_TOKEN not in result.stderr and not (open_tmp / "d").exists()


JOB = '''
import os, sys
print("DIRS=" + os.environ.get("PODVISOR_DATASET_DIRS", "unset"), flush=True)
for d in os.environ.get("PODVISOR_DATASET_DIRS", "").split(os.pathsep):
    print("HAS=" + ",".join(sorted(os.listdir(d))), flush=True)
'''


@pytest.mark.skipif(os.geteuid() != 0, reason="the job runs as the login user, which needs root")
def test_the_pod_fetches_datasets_before_the_job_and_only_once_per_version(hub, open_tmp, stack_factory):
    tmp_path = open_tmp  # the job runs as the login user: its script must be where that user can read it
    folder = make_folder(tmp_path / "src", {"a.txt": b"alpha", "b.jsonl": b"{}\n"})
    assert data(hub, "publish", str(folder), f"hf://datasets/{REPO}/wiki", "--version", "v7").returncode == 0
    script = tmp_path / "job.py"
    script.write_text(JOB)
    env = base_env(tmp_path / "state", SSH_USER="pvtest", SSH_ENABLED="false", JUPYTER_ENABLED="false",
                   INFERENCE_ENABLED="false", AUTOSTOP_ENABLED="false", UPLOAD_ENABLED="false",
                   DATASETS=f"hf://datasets/{REPO}/wiki@latest", DATASETS_DIR=str(tmp_path / "datasets"),
                   JOB_COMMAND=f"{sys.executable} {script}", JOB_ON_EXIT="stay",
                   HF_ENDPOINT=hub.url, HF_TOKEN=HF_TOKEN, HF_HUB_DISABLE_PROGRESS_BARS="1")
    target = tmp_path / "datasets" / "wiki" / "v7"
    for boot in (1, 2):
        downloads = len([r for r in hub.requests if r["method"] == "GET" and "/resolve/" in r["path"]])
        stack = stack_factory(env)
        wait_for(lambda: "HAS=" in stack.output, 90, 0.3, lambda: stack.output[-3000:])
        assert f"DIRS={target}" in stack.output and "HAS=.podvisor-manifest.json,a.txt,b.jsonl" in stack.output
        log = stack.output
        assert log.index("datasets: wiki@v7") < log.index("DIRS="), "the job started before its data"
        fetched = len([r for r in hub.requests if r["method"] == "GET" and "/resolve/" in r["path"]]) - downloads
        if boot == 1:
            assert fetched == 4 and "every checksum verified" in log
        else:
            assert fetched == 0 and "wiki@v7 already on the volume" in log
        assert stack.stop() == 0
