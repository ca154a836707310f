"""The checkpoint uploader under a real supervisord, to a real S3 API server (rclone serve s3) and a real
local volume: complete writes only, exactly once, verified, through outages, kill -9 and stops."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PODVISOR, base_env, wait_for
from services.uploader.queue import Queue

MB = 1 << 20


def _env(tmp_path, dests, s3=None, **extra):
    env = base_env(tmp_path / "state", SSH_ENABLED="false", JUPYTER_ENABLED="false",
                   UPLOAD_WATCH_DIRS=str(tmp_path / "ckpt"), UPLOAD_DESTINATIONS=",".join(dests),
                   UPLOAD_SETTLE_SECONDS="0.5", UPLOAD_RESCAN_SECONDS="2", UPLOAD_RETRY_MAX_SECONDS="2", **extra)
    return {**env, **(s3.env() if s3 else {})}


class _CheckpointQueue(Queue):
    """The queue's rows for checkpoints only: the run manifest podvisor ships under _podvisor/ is not one."""

    def rows(self):
        return [r for r in super().rows() if r.unit != "_podvisor"]

    def pending(self, dest=None):
        return [r for r in super().pending(dest) if r.unit != "_podvisor"]


def _queue(tmp_path) -> Queue:
    return _CheckpointQueue(tmp_path / "state" / "services" / "uploader" / "queue.sqlite3")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _durable(tmp_path, remote, dest=None) -> list:
    return [r for r in _queue(tmp_path).rows() if r.remote == remote and r.status == "durable"
            and (dest is None or r.dest == dest)]


def _rescans(tmp_path) -> int:
    try:
        return json.loads((tmp_path / "state" / "services" / "uploader" / "status.json").read_text())["rescans"]
    except (OSError, ValueError, KeyError):
        return 0


def _rescanned_twice(tmp_path) -> None:
    """Two more full rescans of the watch dirs, as the uploader's status says (whatever the machine's load)."""
    seen = _rescans(tmp_path)
    wait_for(lambda: _rescans(tmp_path) >= seen + 2, 60, 0.2, "two more rescans")


def _all_durable(tmp_path, count) -> bool:
    rows = _queue(tmp_path).rows()
    return len([r for r in rows if r.status == "durable"]) == count and not [r for r in rows if r.status in
                                                                               ("queued", "uploading")]


def test_slow_writer_is_uploaded_once_after_it_is_complete(tmp_path, s3, stack_factory):
    local = tmp_path / "volume"
    stack = stack_factory(_env(tmp_path, ["s3://ckpt/run1", f"file://{local}"], s3))
    stack.wait_state("uploader", "RUNNING")
    target = tmp_path / "ckpt" / "model_step_100.safetensors"
    digest = hashlib.sha256()
    with target.open("wb") as fh:  # 200 MB in 4 MB chunks, with pauses longer than the settle time
        for i in range(50):
            block = os.urandom(4 * MB)
            fh.write(block)
            fh.flush()
            digest.update(block)
            time.sleep(0.8 if i % 10 == 0 else 0.02)
        closed_at = time.time()
    wait_for(lambda: _all_durable(tmp_path, 2), 120, 0.5, lambda: stack.output[-3000:])
    rows = _queue(tmp_path).rows()
    assert len(rows) == 2 and {r.size for r in rows} == {200 * MB}
    assert all(r.enqueued_at >= closed_at for r in rows), "queued before the writer closed the file"
    assert all(r.sha256 == digest.hexdigest() for r in rows)
    obj = s3.objects()["run1/model_step_100.safetensors"]
    assert _sha(obj) == digest.hexdigest()
    assert _sha(local / "model_step_100.safetensors") == digest.hexdigest()
    first = obj.stat().st_mtime_ns, obj.stat().st_ino
    _rescanned_twice(tmp_path)  # the watch dir was looked at again twice: nothing is sent again
    assert (obj.stat().st_mtime_ns, obj.stat().st_ino) == first
    assert len(_queue(tmp_path).rows()) == 2
    assert stack.stop() == 0


def test_upload_now_queues_a_checkpoint_without_the_settle_wait(tmp_path, stack_factory):
    """`podvisor upload now PATH` (it raised a TypeError since checkpoints are kept in a snapshot at queue time)."""
    local = tmp_path / "volume"
    stack = stack_factory({**_env(tmp_path, [f"file://{local}"]), "UPLOAD_SETTLE_SECONDS": "3600"})
    stack.wait_state("uploader", "RUNNING")
    checkpoint = tmp_path / "ckpt" / "checkpoint-7"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(os.urandom(MB))
    queued = subprocess.run([PODVISOR, "upload", "now", str(checkpoint)], env=stack.env, capture_output=True,
                            text=True, timeout=60)
    assert queued.returncode == 0 and queued.stdout.strip() == "1 upload(s) queued for checkpoint-7", queued.stderr
    wait_for(lambda: (local / "checkpoint-7" / "model.safetensors").exists(), 60, 0.3, lambda: stack.output[-3000:])
    assert _sha(local / "checkpoint-7" / "model.safetensors") == _sha(checkpoint / "model.safetensors")


def test_torch_save_to_temp_then_rename_uploads_only_the_final_name(tmp_path, s3, stack_factory):
    torch = pytest.importorskip("torch")
    stack = stack_factory(_env(tmp_path, ["s3://ckpt"], s3))
    stack.wait_state("uploader", "RUNNING")
    (tmp_path / "ckpt").mkdir(exist_ok=True)
    tmp, final = tmp_path / "ckpt" / "step_7.pt.tmp", tmp_path / "ckpt" / "step_7.pt"
    torch.save({"w": torch.randn(512, 512), "step": 7}, tmp)
    time.sleep(1.5)  # longer than the settle time: the temp name is complete, and still never uploaded
    os.replace(tmp, final)
    wait_for(lambda: _durable(tmp_path, "step_7.pt"), 60, 0.3, lambda: stack.output[-3000:])
    assert set(s3.objects()) == {"step_7.pt"}
    assert [r.remote for r in _queue(tmp_path).rows()] == ["step_7.pt"]
    assert torch.load(s3.objects()["step_7.pt"])["step"] == 7


def test_s3_outage_loses_nothing_and_uploads_nothing_twice(tmp_path, s3, stack_factory):
    local = tmp_path / "volume"
    s3.stop()
    stack = stack_factory(_env(tmp_path, ["s3://ckpt", f"file://{local}"], s3))
    stack.wait_state("uploader", "RUNNING")
    ckpt = tmp_path / "ckpt" / "checkpoint-200"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(os.urandom(3 * MB))
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 200}))
    # The volume is not held back by the S3 outage.
    wait_for(lambda: len(_durable(tmp_path, "checkpoint-200/model.safetensors", f"file://{local}")) == 1, 60)
    wait_for(lambda: any(r.attempts >= 2 and r.dest == "s3://ckpt" for r in _queue(tmp_path).rows()), 60, 0.3)
    failing = stack.status()["services"]["uploader"]["uploads"]["destinations"]["s3://ckpt"]
    # The checkpoint's two files (and, once written, the run manifest podvisor ships beside them).
    assert failing["last_error"] and failing["pending"] >= 2
    assert stack.status()["services"]["uploader"]["pending"] >= 2
    s3.start()
    wait_for(lambda: _all_durable(tmp_path, 4), 60, 0.3, lambda: stack.output[-3000:])
    objects = s3.objects()
    assert set(objects) == {"checkpoint-200/model.safetensors", "checkpoint-200/trainer_state.json"}
    assert _sha(objects["checkpoint-200/model.safetensors"]) == _sha(ckpt / "model.safetensors")
    stamps = {k: (p.stat().st_mtime_ns, p.stat().st_ino) for k, p in objects.items()}
    _rescanned_twice(tmp_path)
    assert {k: (p.stat().st_mtime_ns, p.stat().st_ino) for k, p in s3.objects().items()} == stamps
    assert len(_queue(tmp_path).rows()) == 4
    assert s3.env()["AWS_SECRET_ACCESS_KEY"] not in stack.output


def test_sigkill_mid_queue_resumes_without_duplicates(tmp_path, s3, stack_factory):
    root = tmp_path / "ckpt"
    root.mkdir()
    for step in range(1, 7):
        (root / f"step_{step}.pt").write_bytes(os.urandom(40 * MB))
    stack = stack_factory(_env(tmp_path, ["s3://ckpt"], s3))
    wait_for(lambda: any(r.status == "durable" for r in _queue(tmp_path).rows())
             if (tmp_path / "state/services/uploader/queue.sqlite3").exists() else False, 60, 0.1)
    pid = stack.status()["services"]["uploader"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: stack.status()["services"]["uploader"].get("pid") not in (None, pid), 30, 0.3)
    wait_for(lambda: _all_durable(tmp_path, 6), 120, 0.5, lambda: stack.output[-3000:])
    rows = _queue(tmp_path).rows()
    assert sorted(r.remote for r in rows) == [f"step_{s}.pt" for s in range(1, 7)]
    objects = s3.objects()
    assert set(objects) == {f"step_{s}.pt" for s in range(1, 7)}
    for name, path in objects.items():
        assert _sha(path) == _sha(root / name)


def test_sigterm_drains_the_queue_within_the_grace(tmp_path, s3, stack_factory):
    root = tmp_path / "ckpt"
    root.mkdir()
    stack = stack_factory(_env(tmp_path, ["s3://ckpt"], s3, PODVISOR_GRACE_SECONDS="20"))
    stack.wait_state("uploader", "RUNNING")
    for step in range(1, 5):
        (root / f"step_{step}.pt").write_bytes(os.urandom(20 * MB))
    time.sleep(0.3)
    started = time.monotonic()
    assert stack.stop() == 0
    assert time.monotonic() - started < 20
    assert _all_durable(tmp_path, 4), stack.output[-3000:]
    assert set(s3.objects()) == {f"step_{s}.pt" for s in range(1, 5)}
    assert "all uploads drained" in stack.output


def test_sigterm_with_a_destination_down_reports_and_keeps_the_queue(tmp_path, s3, stack_factory):
    root = tmp_path / "ckpt"
    root.mkdir()
    s3.stop()
    # inference, autostop, the bootstrap and the uploader: 10 s is the least grace they can be held to.
    env = _env(tmp_path, ["s3://ckpt"], s3, PODVISOR_GRACE_SECONDS="10")
    stack = stack_factory(env)
    stack.wait_state("uploader", "RUNNING")
    (root / "step_1.pt").write_bytes(os.urandom(MB))
    wait_for(lambda: _queue(tmp_path).pending(), 30, 0.2)
    started = time.monotonic()
    assert stack.stop() == 0
    assert time.monotonic() - started < 10
    assert "stay queued for the next boot" in stack.output
    assert [r.status for r in _queue(tmp_path).rows()] == ["queued"]
    s3.start()  # the next boot uploads what was left
    stack = stack_factory(env)
    wait_for(lambda: _all_durable(tmp_path, 1), 60, 0.3, lambda: stack.output[-3000:])
    assert set(s3.objects()) == {"step_1.pt"}


def test_retention_never_deletes_what_is_not_durable_everywhere(tmp_path, s3, stack_factory):
    root, local = tmp_path / "ckpt", tmp_path / "volume"
    root.mkdir()
    s3.stop()
    stack = stack_factory(_env(tmp_path, [f"file://{local}", "s3://ckpt"], s3, UPLOAD_KEEP_LAST_LOCAL="2"))
    stack.wait_state("uploader", "RUNNING")
    for step in (100, 200, 300, 400):
        (root / f"checkpoint-{step}").mkdir()
        (root / f"checkpoint-{step}" / "model.bin").write_bytes(os.urandom(MB))
    wait_for(lambda: len([r for r in _queue(tmp_path).rows() if r.status == "durable"]) == 4, 60, 0.3)
    time.sleep(2)
    assert sorted(p.name for p in root.iterdir()) == [f"checkpoint-{s}" for s in (100, 200, 300, 400)]
    s3.start()
    wait_for(lambda: sorted(p.name for p in root.iterdir()) == ["checkpoint-300", "checkpoint-400"], 60, 0.3,
             lambda: stack.output[-3000:])
    wait_for(lambda: _all_durable(tmp_path, 8), 60, 0.3)
    assert {f"checkpoint-{s}/model.bin" for s in (100, 200, 300, 400)} == set(s3.objects())


def test_hf_commit_holds_the_checkpoint_and_the_token_only_in_the_auth_header(tmp_path, stack_factory):
    from fakehub import FakeHub

    hub = FakeHub()
    token = "hf_FakeToken_abcdefghijklmnop"
    try:
        stack = stack_factory(_env(tmp_path, ["hf://me/ckpts/runs"], HF_TOKEN=token, HF_ENDPOINT=hub.url,
                                   RESTORE_ON_START="false", UPLOAD_HF_PRIVATE="y"))
        stack.wait_state("uploader", "RUNNING")
        ckpt = tmp_path / "ckpt" / "checkpoint-3"
        ckpt.mkdir(parents=True)
        (ckpt / "config.json").write_text('{"a": 1}')
        (ckpt / "model.safetensors").write_bytes(os.urandom(4096))
        marker = "runs/_podvisor/checkpoints/checkpoint-3.json"
        wait_for(lambda: marker in hub.files, 60, 0.3, lambda: stack.output[-3000:])
        # One commit holds the checkpoint; its marker follows in a commit of its own, once the files verified.
        commits = [c["paths"] for c in hub.commits if c["paths"] != ["runs/_podvisor/manifest.json"]]
        assert commits == [["runs/checkpoint-3/config.json", "runs/checkpoint-3/model.safetensors"], [marker]]
        created = [json.loads(r["body"]) for r in hub.requests if r["path"].endswith("/api/repos/create")]
        # huggingface_hub 1.x sends "private": true, 2.x "visibility": "private".
        assert created and all(c.get("private") is True or c.get("visibility") == "private" for c in created), \
            f"UPLOAD_HF_PRIVATE=y made a public repo: {created}"
        listed = {f["path"]: f["size"] for f in json.loads(hub.files[marker])["files"]}
        assert listed == {"checkpoint-3/config.json": 8, "checkpoint-3/model.safetensors": 4096}
        assert hub.files["runs/checkpoint-3/model.safetensors"] == (ckpt / "model.safetensors").read_bytes()
        for request in hub.requests:
            assert token not in request["path"] and token.encode() not in request["body"]
            others = {k: v for k, v in request["headers"].items() if k.lower() != "authorization"}
            assert token not in json.dumps(others)
        authed = [r for r in hub.requests if r["method"] == "POST"]
        assert authed and all(r["headers"].get("authorization") == f"Bearer {token}" for r in authed)
        assert token not in stack.output
    finally:
        hub.close()
