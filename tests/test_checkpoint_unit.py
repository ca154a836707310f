"""A checkpoint is the unit: shipped whole, committed last (a marker under _podvisor/checkpoints/), restored only
when committed and intact. Real parts: a real supervisord stack, rclone against `rclone serve s3` on loopback,
a real job. Stops and kills land in the middle of a many-file checkpoint, slowed by rclone's own bandwidth limit."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from conftest import PODVISOR, base_env, wait_for

KB = 1 << 10
MARKERS = "_podvisor/checkpoints"


def _env(tmp_path, s3, name="pod", dests=("s3://ckpt/run",), **extra):
    """One pod: its own state dir and watch dir, uploading to the shared store (`s3`, if given)."""
    settings = dict(SSH_ENABLED="false", JUPYTER_ENABLED="false", INFERENCE_ENABLED="false", AUTOSTOP_ENABLED="false",
                    UPLOAD_WATCH_DIRS=str(tmp_path / name / "ckpt"), UPLOAD_DESTINATIONS=",".join(dests),
                    UPLOAD_SETTLE_SECONDS="0.3", UPLOAD_RESCAN_SECONDS="2", UPLOAD_RETRY_MAX_SECONDS="2")
    env = base_env(tmp_path / name / "state", **{**settings, **extra})
    return {**env, **(s3.env() if s3 else {})}


def _write_checkpoint(folder: Path, files: int, size: int) -> dict[str, str]:
    """A transformers-style checkpoint folder: shards, then trainer_state.json last. {name: sha256}."""
    folder.mkdir(parents=True)
    digests = {}
    for i in range(files):
        data = os.urandom(size)
        (folder / f"shard-{i:04d}.bin").write_bytes(data)
        digests[f"shard-{i:04d}.bin"] = hashlib.sha256(data).hexdigest()
    state = json.dumps({"global_step": int(folder.name.split("-")[-1])}).encode()
    (folder / "trainer_state.json").write_bytes(state)
    digests["trainer_state.json"] = hashlib.sha256(state).hexdigest()
    return digests


def _bucket(s3) -> Path:
    return s3.root / s3.bucket / "run"


def _marker(s3, unit: str) -> dict | None:
    path = _bucket(s3) / MARKERS / f"{unit}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _at_store(s3, unit: str) -> list[str]:
    folder = _bucket(s3) / unit
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _restore(tmp_path, s3, name, *args, **extra) -> subprocess.CompletedProcess:
    """`podvisor restore` in a fresh pod: an empty state dir and watch dir."""
    env = _env(tmp_path, s3, name, **extra)
    return subprocess.run([PODVISOR, "restore", *args], env=env, capture_output=True, text=True, timeout=180)


def _local(tmp_path, name) -> list[str]:
    root = tmp_path / name / "ckpt"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def _committed_pod(tmp_path, s3, stack_factory, **extra):
    """A pod that has committed checkpoint-100 (3 files) and is still running."""
    stack = stack_factory(_env(tmp_path, s3, **extra))
    stack.wait_state("uploader", "RUNNING")
    _write_checkpoint(tmp_path / "pod" / "ckpt" / "checkpoint-100", 2, 64 * KB)
    wait_for(lambda: _marker(s3, "checkpoint-100"), 60, 0.2, lambda: stack.output[-3000:])
    return stack


def _rclone_copies(marker: str) -> list[psutil.Process]:
    """Live `rclone copy` processes working for the watch dir `marker` names (not the S3 server)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if any(part.endswith("rclone") for part in cmd) and "copy" in cmd and any(marker in c for c in cmd):
            found.append(proc)
    return found


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_stop_mid_checkpoint_never_lets_a_fresh_pod_restore_the_partial_one(tmp_path, s3, stack_factory, how):
    # 200 shards at 2 MB/s cannot drain in a 6 s grace: the stop lands in the middle of checkpoint-200.
    stack = _committed_pod(tmp_path, s3, stack_factory, PODVISOR_GRACE_SECONDS="6", RCLONE_BWLIMIT="2M")
    ckpt = tmp_path / "pod" / "ckpt" / "checkpoint-200"
    digests = _write_checkpoint(ckpt, 200, 64 * KB)
    wait_for(lambda: len(_at_store(s3, "checkpoint-200")) >= 20, 60, 0.1, lambda: stack.output[-3000:])
    if how == "sigterm":
        assert stack.stop() == 0
        assert "cancelled at the stop deadline" in stack.output, stack.output[-3000:]
    else:
        stack.kill()
    wait_for(lambda: not _rclone_copies(str(tmp_path / "pod")), 30, 0.2, "the pod's rclone transfers to end with it")
    partial = _at_store(s3, "checkpoint-200")
    assert 0 < len(partial) < 201 and _marker(s3, "checkpoint-200") is None

    # A fresh pod restores the older committed checkpoint, never the partial one.
    out = _restore(tmp_path, s3, "fresh")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "restored checkpoint-100" in out.stdout
    assert _local(tmp_path, "fresh") == ["checkpoint-100"]

    if how == "sigterm":  # a cancel at stop is not a failure: no attempt counted, no backoff
        from services.uploader.queue import Queue

        left = [r for r in Queue(tmp_path / "pod/state/services/uploader/queue.sqlite3").pending()]
        assert left and all(r.attempts == 0 for r in left)
    arrived = {name: (_bucket(s3) / "checkpoint-200" / name).stat().st_mtime_ns for name in partial}

    # The original pod comes back: the rest of checkpoint-200 goes up, what arrived is not sent again.
    stack = stack_factory(_env(tmp_path, s3))
    wait_for(lambda: _marker(s3, "checkpoint-200"), 120, 0.3, lambda: stack.output[-3000:])
    marker = _marker(s3, "checkpoint-200")
    assert {f["path"]: f["sha256"] for f in marker["files"]} == {f"checkpoint-200/{k}": v for k, v in digests.items()}
    assert marker["step"] == 200 and marker["bytes"] == sum((ckpt / n).stat().st_size for n in digests)
    assert len(_at_store(s3, "checkpoint-200")) == 201
    for name in _at_store(s3, "checkpoint-200"):
        assert hashlib.sha256((_bucket(s3) / "checkpoint-200" / name).read_bytes()).hexdigest() == digests[name]
    resent = [n for n, stamp in arrived.items() if (_bucket(s3) / "checkpoint-200" / n).stat().st_mtime_ns != stamp]
    assert not resent, f"sent again after the restart: {resent[:5]}"
    wait_for(lambda: "durable at s3://ckpt/run: checkpoint-200" in stack.status()["services"]["uploader"]["summary"],
             10, 0.3)

    out = _restore(tmp_path, s3, "fresh2")
    assert "restored checkpoint-200" in out.stdout, out.stdout + out.stderr


def test_restore_falls_back_past_a_missing_an_empty_and_a_corrupted_file(tmp_path, s3, stack_factory):
    stack = _committed_pod(tmp_path, s3, stack_factory)
    _write_checkpoint(tmp_path / "pod" / "ckpt" / "checkpoint-200", 3, 64 * KB)
    wait_for(lambda: _marker(s3, "checkpoint-200"), 60, 0.2, lambda: stack.output[-3000:])
    assert stack.stop() == 0
    shard = _bucket(s3) / "checkpoint-200" / "shard-0001.bin"
    good = shard.read_bytes()

    def zero_100_bytes() -> None:
        data = bytearray(good)
        data[1000:1100] = bytes(100)
        shard.write_bytes(bytes(data))

    breakages = {"missing": shard.unlink, "0 bytes": lambda: shard.write_bytes(b""), "corrupt": zero_100_bytes}
    for n, (what, damage) in enumerate(breakages.items()):
        damage()
        out = _restore(tmp_path, s3, f"fresh{n}")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "restored checkpoint-100" in out.stdout, (what, out.stdout)
        assert "checkpoint-200 at s3://ckpt/run is not usable" in out.stdout, (what, out.stdout)
        assert _local(tmp_path, f"fresh{n}") == ["checkpoint-100"], what
        assert not any(p.name.startswith(".") for p in (tmp_path / f"fresh{n}" / "ckpt").iterdir())
        shard.write_bytes(good)
    out = _restore(tmp_path, s3, "intact")
    assert "restored checkpoint-200" in out.stdout


def test_restore_force_replaces_a_same_named_local_checkpoint_and_leaves_nothing_behind(tmp_path, s3, stack_factory):
    stack = _committed_pod(tmp_path, s3, stack_factory)
    assert stack.stop() == 0
    local = tmp_path / "fresh" / "ckpt" / "checkpoint-100"
    local.mkdir(parents=True)
    (local / "stale.bin").write_bytes(b"stale")
    out = _restore(tmp_path, s3, "fresh")
    assert "nothing restored" in out.stdout and (local / "stale.bin").exists()
    out = _restore(tmp_path, s3, "fresh", "--force")
    assert out.returncode == 0 and "restored checkpoint-100" in out.stdout, out.stdout + out.stderr
    assert sorted(p.name for p in local.iterdir()) == ["shard-0000.bin", "shard-0001.bin", "trainer_state.json"]
    assert _local(tmp_path, "fresh") == ["checkpoint-100"], "a staging or swapped-out folder was left behind"


class SilentListener:
    """Accepts TCP connections and never answers: the worst kind of unreachable."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


JOB = '''
import os, sys
open(sys.argv[1], "a").write(repr(os.environ.get("PODVISOR_RESUME_FROM")) + "\\n")
'''


@pytest.mark.skipif(os.geteuid() != 0, reason="the job runs as the login user, which needs root")
@pytest.mark.parametrize("outage", ["closed port", "silent listener"])
def test_an_unreachable_store_at_boot_holds_the_job_until_it_answers(tmp_path, s3, stack_factory, outage, open_tmp):
    stack = _committed_pod(tmp_path, s3, stack_factory)
    assert stack.stop() == 0
    s3.stop()
    silent = SilentListener() if outage == "silent listener" else None
    script, log = open_tmp / "job.py", open_tmp / "job.log"  # where the login user can read them
    script.write_text(JOB)
    log.touch(mode=0o666)
    log.chmod(0o666)
    env = _env(tmp_path, s3, "fresh", SSH_USER="pvtest", RESTORE_TIMEOUT_SECONDS="3",
               JOB_COMMAND=f"{sys.executable} {script} {log}", JOB_RESUME_ARGS="--resume {checkpoint}")
    if silent:
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{silent.port}"
    started = time.monotonic()
    stack = stack_factory(env)
    try:
        stack.wait_state("uploader", "RUNNING", timeout=30)
        stack.wait_state("job", "RUNNING", timeout=30)
        wait_for(lambda: "job: held, not started" in stack.output, 60, 0.2, lambda: stack.output[-3000:])
        assert time.monotonic() - started < 45, "boot and the restore check were not bounded in time"
        status = stack.status()["services"]
        assert "RESTORE HELD" in status["uploader"]["summary"]
        assert log.read_text() == "", "the job started from scratch while no destination could be checked"
        assert _local(tmp_path, "fresh") == []
        assert ("connection refused" if not silent else "no answer") in stack.output
    finally:
        if silent:
            silent.close()
    if silent:  # the store comes back where it was configured
        env["AWS_ENDPOINT_URL"] = s3.url
        stack.stop()
        stack = stack_factory(env)
    s3.start()
    wait_for(lambda: log.read_text(), 90, 0.3, lambda: stack.output[-3000:])
    assert "checkpoint-100" in log.read_text()
    assert _local(tmp_path, "fresh") == ["checkpoint-100"]
    job = stack.status()["services"]["job"]["job"]
    assert job["state"] != "held" and not job.get("held_reason"), "the job still says it is held"


def test_backoff_ends_when_the_store_answers_and_errors_are_readable(tmp_path, s3, stack_factory):
    s3.stop()
    stack = stack_factory(_env(tmp_path, s3, UPLOAD_RETRY_MAX_SECONDS="300", RESTORE_ON_START="false"))
    stack.wait_state("uploader", "RUNNING")
    _write_checkpoint(tmp_path / "pod" / "ckpt" / "checkpoint-1", 2, 4 * KB)
    from services.uploader.queue import Queue

    queue = Queue(tmp_path / "pod/state/services/uploader/queue.sqlite3")
    wait_for(lambda: any(r.attempts >= 4 for r in queue.pending()), 90, 0.3, lambda: stack.output[-3000:])
    error = stack.status()["services"]["uploader"]["uploads"]["destinations"]["s3://ckpt/run"]["last_error"]
    assert error and "connection refused" in error and "Config file" not in error
    assert stack.output.count("uploads to s3://ckpt/run failing") == 1, "one warning per state change"
    s3.start()
    returned = time.monotonic()
    wait_for(lambda: _marker(s3, "checkpoint-1"), 30, 0.2, lambda: stack.output[-3000:])
    # The backoff had grown to 16 s or more; the probe ends it within its few seconds.
    assert time.monotonic() - returned < 12
    assert "s3://ckpt/run answers again" in stack.output
    wait_for(lambda: "FAILING" not in stack.status()["services"]["uploader"]["summary"], 10, 0.3,
             "the error to clear once nothing waits for the destination")


def test_kill_9_of_the_uploader_leaves_no_orphan_and_one_writer(tmp_path, s3, stack_factory):
    stack = stack_factory(_env(tmp_path, s3, RCLONE_BWLIMIT="1M", RESTORE_ON_START="false"))
    stack.wait_state("uploader", "RUNNING")
    _write_checkpoint(tmp_path / "pod" / "ckpt" / "checkpoint-5", 40, 64 * KB)
    wait_for(lambda: _rclone_copies(str(tmp_path / "pod")), 30, 0.05)
    pid = stack.status()["services"]["uploader"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not [p for p in _rclone_copies(str(tmp_path / "pod")) if p.ppid() == pid], 5, 0.05,
             "the killed uploader's rclone to die with it")
    most = 0
    deadline = time.monotonic() + 120
    while not _marker(s3, "checkpoint-5") and time.monotonic() < deadline:
        most = max(most, len(_rclone_copies(str(tmp_path / "pod"))))
        time.sleep(0.05)
    assert _marker(s3, "checkpoint-5"), stack.output[-3000:]
    assert most <= 1, f"{most} transfers of one checkpoint at once"
    assert len(_at_store(s3, "checkpoint-5")) == 41
