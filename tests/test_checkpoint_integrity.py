"""No marker for a checkpoint that is not whole. Real parts: a real stack, rclone against `rclone serve s3` slowed by
rclone's own bandwidth limit, a trainer stand-in that prunes its old checkpoints (save_total_limit) or pauses in
the middle of one, a black-hole S3 endpoint that accepts TCP and never answers."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path

from conftest import wait_for
from services.uploader.destinations import Batch, DestinationError, FileVersion, file_hash, parse
from test_checkpoint_unit import (KB, SilentListener, _at_store, _bucket, _committed_pod, _env, _local, _marker,
                                  _rclone_copies, _restore)

HF_FILES = (["config.json", "model.safetensors", "training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"]
            + [f"extra-{i:02d}.bin" for i in range(14)] + ["trainer_state.json"])
"""An HF Trainer checkpoint of 21 files, in the order the Trainer writes them: trainer_state.json last."""


def _write_files(folder: Path, names: list[str], size: int) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    digests = {}
    for name in names:
        data = json.dumps({"step": folder.name}).encode() if name.endswith(".json") else \
            hashlib.sha256(f"{folder.name}/{name}".encode()).digest() * (size // 32)
        (folder / name).write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    return digests


def _uploader(stack) -> dict:
    return stack.status()["services"]["uploader"]


def _whole(s3, unit: str, names: list[str]) -> None:
    """The marker lists exactly these files, and each is at the store with the listed sha256."""
    marker = _marker(s3, unit)
    listed = {f["path"]: f["sha256"] for f in marker["files"]}
    assert sorted(listed) == sorted(f"{unit}/{n}" for n in names), f"{unit}: marker lists {len(listed)} file(s)"
    for path, sha in listed.items():
        assert hashlib.sha256((_bucket(s3) / path).read_bytes()).hexdigest() == sha, path


def test_a_trainer_that_prunes_old_checkpoints_never_gets_a_partial_one_committed(tmp_path, s3, stack_factory):
    """10 checkpoints of 21 files, all but the last 2 deleted as training goes on, while a 1 MB/s link ships them."""
    stack = stack_factory(_env(tmp_path, s3, RCLONE_BWLIMIT="1M", RESTORE_ON_START="false"))
    stack.wait_state("uploader", "RUNNING")
    root = tmp_path / "pod" / "ckpt"
    steps = [100 * n for n in range(1, 11)]
    for i, step in enumerate(steps):
        _write_files(root / f"checkpoint-{step}", HF_FILES, 32 * KB)
        for old in steps[:max(0, i - 1)]:
            shutil.rmtree(root / f"checkpoint-{old}", ignore_errors=True)
        time.sleep(0.5)  # the trainer's pace between saves: the link cannot keep up with it
    assert _local(tmp_path, "pod") == ["checkpoint-1000", "checkpoint-900"]

    def settled():
        info = _uploader(stack)
        return info["pending"] == 0 and info["uncommitted"] == 0 and info

    info = wait_for(settled, 180, 0.5, lambda: stack.output[-3000:])
    committed = [s for s in steps if _marker(s3, f"checkpoint-{s}")]
    for step in committed:
        _whole(s3, f"checkpoint-{step}", HF_FILES)
    lost = {entry["unit"] for entry in info["uploads"]["lost_locally"]}
    assert {"checkpoint-900", "checkpoint-1000"} <= {f"checkpoint-{s}" for s in committed}
    assert len(committed) + len(lost) == len(steps), (committed, lost)
    assert not {f"checkpoint-{s}" for s in committed} & lost
    peak = info["uploads"]["snapshots"]["peak_bytes"]
    print(f"\npruning trainer: {len(steps)} written, {len(committed)} committed, {len(lost)} reported lost, "
          f"snapshots held {peak / 1e6:.2f} MB at their peak")
    wait_for(lambda: _uploader(stack)["uploads"]["snapshots"]["held_bytes"] == 0, 30, 0.3,
             "the snapshots to be freed once every destination committed them")

    # A checkpoint deleted before it was complete (its Trainer never wrote trainer_state.json) is lost, said so.
    _write_files(root / "checkpoint-1100", HF_FILES[:-1], 4 * KB)
    wait_for(lambda: "checkpoint-1100 waits for trainer_state.json" in _uploader(stack)["summary"], 30, 0.3,
             lambda: stack.output[-3000:])
    shutil.rmtree(root / "checkpoint-1100")
    wait_for(lambda: "checkpoint-1100 LOST LOCALLY" in _uploader(stack)["summary"], 30, 0.3,
             lambda: stack.output[-3000:])
    assert _marker(s3, "checkpoint-1100") is None

    out = _restore(tmp_path, s3, "fresh")
    assert "restored checkpoint-1000" in out.stdout, out.stdout + out.stderr
    assert sorted(p.name for p in (tmp_path / "fresh" / "ckpt" / "checkpoint-1000").iterdir()) == sorted(HF_FILES)


def test_a_checkpoint_deleted_as_its_transfer_starts_is_shipped_whole_from_its_snapshot(tmp_path, s3,
                                                                                         stack_factory):
    stack = stack_factory(_env(tmp_path, s3, RCLONE_BWLIMIT="1M", RESTORE_ON_START="false"))
    stack.wait_state("uploader", "RUNNING")
    folder = tmp_path / "pod" / "ckpt" / "checkpoint-5"
    names = [f"shard-{i:02d}.bin" for i in range(40)] + ["state.json"]
    _write_files(folder, names, 64 * KB)
    wait_for(lambda: _rclone_copies(str(tmp_path / "pod")), 30, 0.02, "the transfer to start")
    shutil.rmtree(folder)
    wait_for(lambda: _marker(s3, "checkpoint-5"), 120, 0.3, lambda: stack.output[-3000:])
    _whole(s3, "checkpoint-5", names)
    assert len(_at_store(s3, "checkpoint-5")) == 41


def test_a_source_rclone_skips_as_missing_never_counts_as_arrived(tmp_path, s3):
    """`rclone copy --files-from-raw` skips a source that no longer exists and exits 0."""
    root = tmp_path / "src"
    names = ["checkpoint-1/a.bin", "checkpoint-1/b.bin", "checkpoint-1/c.bin"]
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(name.encode() * 1000)
    files = [FileVersion(root / n, n, *file_hash(root / n)) for n in names]
    (root / names[1]).unlink()
    dest = parse("s3://ckpt/run", {**s3.env(), "PATH": "/usr/bin:/bin"})
    arrived: list[str] = []
    try:
        dest.upload(Batch(root, "", "checkpoint-1", files), lambda v: arrived.append(v.remote), lambda sent: None)
        raise AssertionError("an upload with a missing source reported success")
    except DestinationError as exc:
        assert "1 of 3 file(s) not at the destination" in str(exc)
    assert sorted(arrived) == [names[0], names[2]]
    assert dest.sizes(names, 10) == {names[0]: 18000, names[2]: 18000}


def _waits_for(stack, unit: str, what: str) -> bool:
    return f"{unit} waits for {what}" in _uploader(stack)["summary"]


def test_a_writer_that_pauses_mid_checkpoint_is_committed_only_once_its_framework_says_done(tmp_path, stack_factory):
    """In-place writers pausing 3x the settle time between files (a GPU->CPU copy, a gather): an HF Trainer
    checkpoint waits for trainer_state.json, a torch.distributed.checkpoint folder for .metadata."""
    volume = tmp_path / "volume"
    stack = stack_factory(_env(tmp_path, None, dests=(f"file://{volume}",), UPLOAD_SETTLE_SECONDS="0.3"))
    stack.wait_state("uploader", "RUNNING")
    root = tmp_path / "pod" / "ckpt"
    marker = volume / "_podvisor" / "checkpoints"
    hf, dcp = root / "checkpoint-40", root / "step_50"
    for names in (HF_FILES[:3], HF_FILES[3:5], HF_FILES[5:-1]):
        _write_files(hf, names, 4 * KB)
        time.sleep(0.9)  # the writer's own pause, 3x the settle time
        wait_for(lambda: _waits_for(stack, "checkpoint-40", "trainer_state.json"), 30, 0.2,
                 lambda: stack.output[-3000:])
        assert not (marker / "checkpoint-40.json").exists()
    _write_files(hf, HF_FILES[-1:], 4 * KB)
    wait_for(lambda: (marker / "checkpoint-40.json").exists(), 30, 0.2, lambda: stack.output[-3000:])
    listed = [f["path"] for f in json.loads((marker / "checkpoint-40.json").read_text())["files"]]
    assert sorted(listed) == sorted(f"checkpoint-40/{n}" for n in HF_FILES)

    for names in (["__0_0.distcp"], ["__1_0.distcp"]):
        _write_files(dcp, names, 4 * KB)
        time.sleep(0.9)
        wait_for(lambda: _waits_for(stack, "step_50", ".metadata"), 30, 0.2, lambda: stack.output[-3000:])
        assert not (marker / "step_50.json").exists()
    _write_files(dcp, [".metadata"], 4 * KB)
    wait_for(lambda: (marker / "step_50.json").exists(), 30, 0.2, lambda: stack.output[-3000:])
    listed = [f["path"] for f in json.loads((marker / "step_50.json").read_text())["files"]]
    assert sorted(listed) == ["step_50/.metadata", "step_50/__0_0.distcp", "step_50/__1_0.distcp"]


def test_a_black_hole_destination_fails_in_words_and_holds_nothing_else_back(tmp_path, stack_factory):
    silent = SilentListener()
    volume = tmp_path / "volume"
    grace = 15
    env = _env(tmp_path, None, dests=("s3://ckpt/run", f"file://{volume}"), RESTORE_ON_START="false",
               PODVISOR_GRACE_SECONDS=str(grace), AWS_ENDPOINT_URL=f"http://127.0.0.1:{silent.port}",
               AWS_ACCESS_KEY_ID="podvisor-test-key", AWS_SECRET_ACCESS_KEY="podvisor-test-secret-0123456789",
               AWS_REGION="us-east-1")
    try:
        stack = stack_factory(env)
        stack.wait_state("uploader", "RUNNING")
        _write_files(tmp_path / "pod" / "ckpt" / "checkpoint-1", ["a.bin", "b.bin", "state.json"], 16 * KB)
        written = time.monotonic()
        wait_for(lambda: (volume / "_podvisor" / "checkpoints" / "checkpoint-1.json").exists(), 30, 0.2,
                 lambda: stack.output[-3000:])
        failing = f"s3://ckpt/run FAILING: DestinationError: no answer from 127.0.0.1:{silent.port}"
        wait_for(lambda: failing in _uploader(stack)["summary"], 60, 0.5, lambda: stack.output[-3000:])
        called = time.monotonic() - written
        assert called < 60 + 5, "the black hole was not called failing within a minute"
        assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S* uploader WARNING uploads to s3://ckpt/run failing",
                         stack.output), "the uploader's lines carry no timestamp"
        began = time.monotonic()
        assert stack.stop(timeout=grace + 30) == 0
        took = time.monotonic() - began
        assert took < grace + 10, f"the stop took {took:.1f} s with a {grace} s grace"
        print(f"\nblack hole: FAILING in status {called:.1f} s after the checkpoint was written; the file:// "
              f"destination committed meanwhile; stop took {took:.1f} s of a {grace} s grace")
    finally:
        silent.close()


def test_a_restore_that_skips_a_checkpoint_says_which_and_why_and_a_restart_keeps_it_said(tmp_path, s3,
                                                                                         stack_factory):
    stack = _committed_pod(tmp_path, s3, stack_factory)
    _write_files(tmp_path / "pod" / "ckpt" / "checkpoint-200", ["a.bin", "b.bin", "state.json"], 16 * KB)
    wait_for(lambda: _marker(s3, "checkpoint-200"), 60, 0.2, lambda: stack.output[-3000:])
    assert stack.stop() == 0
    (_bucket(s3) / "checkpoint-200" / "b.bin").unlink()

    env = _env(tmp_path, s3, "fresh")
    record = tmp_path / "fresh" / "state" / "services" / "uploader" / "restore.json"
    stack = stack_factory(env)  # a fresh pod: its uploader restores at start
    wait_for(lambda: _local(tmp_path, "fresh") == ["checkpoint-100"], 60, 0.3, lambda: stack.output[-3000:])
    said = json.loads(record.read_text())
    assert said["state"] == "restored" and said["checkpoint"] == "checkpoint-100"
    [skipped] = said["skipped"]
    assert skipped["checkpoint"] == "checkpoint-200" and skipped["source"] == "s3://ckpt/run"
    assert "checkpoint-200/b.bin" in skipped["reason"], skipped
    assert "restore skipped checkpoint-200 at s3://ckpt/run" in _uploader(stack)["summary"]
    assert stack.stop() == 0

    stack = stack_factory(env)  # the next boot finds the checkpoint here: what the restore said stays said
    wait_for(lambda: "already holds a checkpoint" in stack.output, 60, 0.3, lambda: stack.output[-3000:])
    assert json.loads(record.read_text()) == said
    assert "restore skipped checkpoint-200" in _uploader(stack)["summary"]


def test_a_hub_that_never_answers_is_failing_in_words(tmp_path, stack_factory):
    """huggingface_hub's client waits forever by default; the stall time bounds every request to the Hub."""
    silent = SilentListener()
    env = _env(tmp_path, None, dests=("hf://me/ckpts",), RESTORE_ON_START="false", UPLOAD_STALL_SECONDS="5",
               HF_ENDPOINT=f"http://127.0.0.1:{silent.port}", HF_TOKEN="hf_FakeToken_abcdefghijklmnop")
    try:
        stack = stack_factory(env)
        stack.wait_state("uploader", "RUNNING")
        _write_files(tmp_path / "pod" / "ckpt" / "checkpoint-1", ["model.safetensors"], 4 * KB)
        failing = f"hf://me/ckpts FAILING: DestinationError: no answer from 127.0.0.1:{silent.port} for 5 s"
        wait_for(lambda: failing in _uploader(stack)["summary"], 60, 0.5, lambda: stack.output[-3000:])
    finally:
        silent.close()
