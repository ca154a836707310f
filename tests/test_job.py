"""The training job under a real supervisord: a real Python "training" script writes step_<N> checkpoints."""
from __future__ import annotations

import json
import os
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the job runs as the login user, which needs root")

from conftest import base_env, wait_for
from services.uploader.queue import Queue

TRAIN = '''
import json, os, sys, time
ckpt, log, fail_until = sys.argv[1], sys.argv[2], int(sys.argv[3])
attempt = int(os.environ["PODVISOR_JOB_ATTEMPT"])
resume = os.environ.get("PODVISOR_RESUME_FROM")
with open(log, "a") as fh:
    fh.write(json.dumps({"attempt": attempt, "resume": resume, "argv": sys.argv[4:], "user": os.getuid(),
                         "wandb": os.environ.get("WANDB_MODE"), "vast_key": os.environ.get("CONTAINER_API_KEY")})
             + "\\n")
start = int(resume.rsplit("_", 1)[1].split(".")[0]) if resume else 0
for step in range(start + 1, start + 3):
    os.makedirs(ckpt, exist_ok=True)
    tmp = os.path.join(ckpt, f".step_{step}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(os.urandom(4096))
    os.replace(tmp, os.path.join(ckpt, f"step_{step}.pt"))
    print(f"step {step}", flush=True)
    time.sleep(0.2)
sys.exit(1 if attempt < fail_until else 0)
'''


def _env(tmp_path, api, fail_until=0, **extra):
    """The job runs as the login user: its script and log live where that user can reach them."""
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    ckpt, log = tmp_path / "ckpt", tmp_path / "attempts.jsonl"
    log.touch(mode=0o666)
    log.chmod(0o666)
    settings = dict(SSH_USER="pvtest", SSH_ENABLED="false", JUPYTER_ENABLED="false", INFERENCE_ENABLED="false", AUTOSTOP_ENABLED="false",
                    UPLOAD_WATCH_DIRS=str(ckpt), UPLOAD_DESTINATIONS=f"file://{tmp_path / 'volume'}",
                    UPLOAD_SETTLE_SECONDS="0.3", RESTORE_ON_START="false",
                    JOB_COMMAND=f"{sys.executable} {script} {ckpt} {log} {fail_until}",
                    JOB_RESUME_ARGS="--resume {checkpoint}", AUTOSTOP_ACTION="vast", VAST_API_URL=f"{api.url}/api/v0",
                    CONTAINER_ID="77", CONTAINER_API_KEY="vast-key-0123456789", AUTOSTOP_STOP_TIMEOUT_SECONDS="1")
    return base_env(tmp_path / "state", **{**settings, **extra})


def _attempts(tmp_path) -> list[dict]:
    path = tmp_path / "attempts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _job(stack) -> dict:
    return stack.status()["services"]["job"].get("job", {})


def test_success_drains_uploads_then_stops_the_pod(open_tmp, api, stack_factory):
    tmp_path = open_tmp
    stack = stack_factory(_env(tmp_path, api, JOB_ON_EXIT="stop"))
    wait_for(lambda: api.requests, 60, 0.2, lambda: stack.output[-3000:])
    stop_sent = time.time()
    # The latest version of each file: an earlier one of the manifest or the job's log (replaced before it went
    # up, or after) is history, not what the stop waited for.
    latest = {}
    for row in sorted(Queue(tmp_path / "state/services/uploader/queue.sqlite3").rows(), key=lambda r: r.id):
        latest[row.remote] = row
    rows = list(latest.values())
    assert sorted(latest) == ["_podvisor/job.log", "_podvisor/manifest.json", "step_1.pt", "step_2.pt"]
    assert all(r.status == "durable" and r.durable_at <= stop_sent for r in rows), [(r.remote, r.status) for r in rows]
    sent = api.requests[0]
    assert (sent["method"], sent["path"], sent["body"]) == ("PUT", "/api/v0/instances/77/", {"state": "stopped"})
    job = _job(stack)
    assert (job["state"], job["exit_code"], job["attempts"]) == ("succeeded", 0, 1)
    manifest = json.loads((tmp_path / "state" / "manifest.json").read_text())
    assert manifest["job"]["exit_code"] == 0 and manifest["job"]["duration_s"] > 0
    shipped = json.loads((tmp_path / "volume" / "_podvisor" / "manifest.json").read_text())
    assert shipped["job"] == manifest["job"]
    assert "step 2" in (tmp_path / "volume" / "_podvisor" / "job.log").read_text()
    assert _attempts(tmp_path)[0]["wandb"] == "offline"
    # The runner stopped the pod with Vast's key; the training code it ran never had it.
    assert _attempts(tmp_path)[0]["vast_key"] is None
    assert "[job] step 2" in stack.output


def test_on_failure_restarts_resume_from_the_last_checkpoint_then_fail(open_tmp, api, stack_factory):
    tmp_path = open_tmp
    stack = stack_factory(_env(tmp_path, api, fail_until=99, JOB_MAX_RESTARTS="2"))
    wait_for(lambda: _job(stack).get("state") == "failed", 60, 0.3, lambda: stack.output[-3000:])
    attempts = _attempts(tmp_path)
    ckpt = tmp_path / "ckpt"
    assert [a["resume"] for a in attempts] == [None, str(ckpt / "step_2.pt"), str(ckpt / "step_4.pt")]
    assert attempts[1]["argv"] == ["--resume", str(ckpt / "step_2.pt")]
    job = _job(stack)
    assert (job["exit_code"], job["attempts"]) == (1, 3)
    assert "failed, attempt 3, exit code 1" in stack.status()["services"]["job"]["summary"]
    assert api.requests == [], "JOB_ON_EXIT=stay: the pod keeps running"


def test_never_is_not_restarted(open_tmp, api, stack_factory):
    tmp_path = open_tmp
    stack = stack_factory(_env(tmp_path, api, fail_until=99, JOB_RESTART="never"))
    wait_for(lambda: _job(stack).get("state") == "failed", 60, 0.3, lambda: stack.output[-3000:])
    # The runner's exit is the positive signal: its loop, the only place a new attempt could start, is over.
    stack.wait_state("job", "EXITED", timeout=60)
    assert len(_attempts(tmp_path)) == 1


def test_stay_leaves_the_pod_running(open_tmp, api, stack_factory):
    tmp_path = open_tmp
    stack = stack_factory(_env(tmp_path, api))
    wait_for(lambda: _job(stack).get("state") == "succeeded", 60, 0.3, lambda: stack.output[-3000:])
    stack.wait_state("job", "EXITED", timeout=60)  # JOB_ON_EXIT is acted on before the runner exits
    assert api.requests == []
    assert stack.proc.poll() is None
    assert stack.state("uploader") == "RUNNING"
