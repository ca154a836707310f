"""The autostop service under a real supervisord: real activity keeps the pod, an idle pod is stopped through
a loopback stand-in for the provider's API, never before its grace, never with an upload pending."""
from __future__ import annotations

import json
import re
import os
import subprocess
import time

import pytest
import requests

from conftest import base_env, free_port, make_key, wait_for
from fakeapi import FakeApi
from platforms import Heartbeat
from s3server import S3Server

KEY = "vast-instance-key-0123456789abcdef"
IDLE_S = 3  # AUTOSTOP_IDLE_MINUTES=0.05


def _env(tmp_path, api, actions="vast,exit", **extra):
    settings = dict(SSH_ENABLED="false", JUPYTER_ENABLED="false", UPLOAD_ENABLED="false",
                    AUTOSTOP_IDLE_MINUTES="0.05", AUTOSTOP_WARN_SECONDS="1", AUTOSTOP_GRACE_SECONDS="0",
                    AUTOSTOP_POLL_SECONDS="0.3", AUTOSTOP_STOP_TIMEOUT_SECONDS="1", AUTOSTOP_CPU_PERCENT="0",
                    AUTOSTOP_ACTION=actions, VAST_API_URL=f"{api.url}/api/v0?api_key=leak", CONTAINER_ID="4242",
                    CONTAINER_API_KEY=KEY)
    return base_env(tmp_path / "state", **{**settings, **extra})


def _decision(tmp_path) -> dict:
    try:
        return json.loads((tmp_path / "state/services/autostop/decision.json").read_text())
    except (OSError, ValueError):
        return {}


def _assert_vast_stop(api):
    from contract import vast_problems

    sent = api.requests[0]
    assert (sent["method"], sent["path"], sent["body"]) == ("PUT", "/api/v0/instances/4242/", {"state": "stopped"})
    assert vast_problems("InstanceUpdate", sent["body"]) == [], "Vast's published schema takes it"
    assert sent["headers"]["Authorization"] == f"Bearer {KEY}"
    assert all(KEY not in r["path"] and "api_key" not in r["path"] for r in api.requests)


def test_idle_pod_is_stopped_after_the_idle_time_and_not_before_the_grace(tmp_path, api, stack_factory):
    stack = stack_factory(_env(tmp_path, api, AUTOSTOP_GRACE_SECONDS="6"))
    started = time.monotonic()
    wait_for(lambda: api.requests, 40, 0.1, lambda: stack.output[-3000:])
    assert time.monotonic() - started >= 6, "stopped inside the boot grace"
    _assert_vast_stop(api)
    # Vast accepted, but the pod did not go away within AUTOSTOP_STOP_TIMEOUT_SECONDS: reported, then `exit`.
    assert stack.proc.wait(30) == 0
    assert "still running after 1 s" in stack.output
    assert KEY not in stack.output
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".log", ".jsonl"):
            assert KEY not in path.read_text(errors="replace"), path
    gpu = [s for s in json.loads((tmp_path / "state/services/autostop/decision.json").read_text())["signals"]
           if s["name"] == "gpu"]
    assert gpu and gpu[0]["reason"].startswith("no GPU")


def test_an_outage_is_retried_then_the_next_action_runs(tmp_path, stack_factory):
    failing = FakeApi(status=503)
    try:
        stack = stack_factory(_env(tmp_path, failing))
        assert stack.proc.wait(60) == 0, "the `exit` action after vast failed"
        assert [r["method"] for r in failing.requests] == ["PUT"] * 4
        assert "vast stop" not in stack.output or "HTTP 500" in stack.output
    finally:
        failing.close()


def test_runpod_stop_is_v2s_action_then_graphql_when_v2_is_down(tmp_path, stack_factory):
    """RunPod REST v2's lifecycle route first (its body checked against the published PodActionRequest); an
    outage there (503, retried) falls back to GraphQL's podStop."""
    from contract import runpod_problems

    def answer(request: dict) -> tuple[int, dict]:
        if request["path"].startswith("/v2/"):
            return 503, {"title": "Service Unavailable", "status": 503, "detail": "try again later"}
        return 200, {"data": {"podStop": {"id": "pod123", "desiredStatus": "EXITED"}}}

    api = FakeApi(answer=answer)
    user_key, pod_key = "rp-user-key-abcdef0123456789", "rp-pod-key-abcdef0123456789"
    try:
        env = _env(tmp_path, api, actions="runpod,exit", RUNPOD_POD_ID="pod123", RUNPOD_API_KEY=pod_key,
                   AUTOSTOP_RUNPOD_API_KEY=user_key, RUNPOD_GRAPHQL_URL=f"{api.url}/graphql",
                   RUNPOD_API_URL=f"{api.url}/v2", PODVISOR_PROVIDER="runpod")
        env["PATH"] = env["PATH"].replace("/usr/local/bin:", "")  # no runpodctl here
        stack = stack_factory(env)
        assert stack.proc.wait(60) == 0
        v2 = [r for r in api.requests if r["path"].startswith("/v2/")]
        assert [(r["method"], r["path"]) for r in v2] == [("POST", "/v2/pods/pod123/action")] * 4, "retried on 503"
        assert v2[0]["body"] == {"action": "stop"} and runpod_problems("PodActionRequest", v2[0]["body"]) == []
        graphql = api.requests[len(v2)]
        assert (graphql["method"], graphql["path"]) == ("POST", "/graphql")
        assert graphql["body"] == {"query": 'mutation { podStop(input: {podId: "pod123"}) { id desiredStatus } }'}
        assert all(r["headers"]["Authorization"] == f"Bearer {user_key}" for r in api.requests), \
            "the user's key overrides the pod's"
        assert "runpod stop requested through graphql" in stack.output
        assert user_key not in stack.output and pod_key not in stack.output
    finally:
        api.close()


def test_none_sends_nothing(tmp_path, api, stack_factory):
    stack = stack_factory(_env(tmp_path, api, actions="none"))
    wait_for(lambda: "dry-run" in stack.output, 30, 0.2, lambda: stack.output[-3000:])
    assert api.requests == [], "the dry-run line comes once the action was taken: nothing was sent before it"
    assert stack.proc.poll() is None


def _keeps_alive(tmp_path, api, because: str, seconds: float = 2 * IDLE_S) -> None:
    """Once the autostop has said the pod is busy `because` of an activity (the positive signal, whatever the
    machine's load made the boot take), nothing is sent for longer than idle + warning while it lasts."""
    wait_for(lambda: because in _decision(tmp_path).get("message", ""), 60, 0.2, lambda: str(_decision(tmp_path)))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert api.requests == [], f"stopped while busy: {_decision(tmp_path)}"
        time.sleep(0.3)
    decision = _decision(tmp_path)
    assert decision["state"] == "busy" and because in decision["message"], decision


def test_busy_process_and_heartbeat_keep_the_pod(tmp_path, api, stack_factory):
    beat = Heartbeat(tmp_path / "alive")  # from before the stack starts: there at the autostop's first look
    busy = subprocess.Popen(["sleep", "600.5"])
    try:
        stack_factory(_env(tmp_path, api, actions="vast", AUTOSTOP_BUSY_PROCESSES=r"sleep 600\.5",
                           AUTOSTOP_HEARTBEAT_FILE=str(beat.path)))
        beat.stop()
        _keeps_alive(tmp_path, api, "busy process")  # the process alone
        beat = Heartbeat(beat.path)
        _keeps_alive(tmp_path, api, "heartbeat")
    finally:
        busy.kill()
        busy.wait()
    _keeps_alive(tmp_path, api, "heartbeat")  # the heartbeat alone
    beat.stop()
    wait_for(lambda: api.requests, 30, 0.2)
    _assert_vast_stop(api)


def test_inference_heartbeat_keeps_the_pod(tmp_path, api, stack_factory):
    (tmp_path / "state" / "heartbeats").mkdir(parents=True)
    beat = Heartbeat(tmp_path / "state" / "heartbeats" / "inference")
    stack_factory(_env(tmp_path, api, actions="vast"))
    _keeps_alive(tmp_path, api, "inference request")
    beat.stop()
    wait_for(lambda: api.requests, 30, 0.2)


@pytest.mark.skipif(os.geteuid() != 0, reason="the login user needs root")
def test_an_ssh_session_keeps_the_pod_while_used_and_scanners_and_idle_sessions_do_not(open_tmp, api, stack_factory):
    """A logged-in session whose program works keeps the pod; 20 connections that never log in (an internet
    scanner holding the port) do not, and neither does the session once idle for AUTOSTOP_SSH_IDLE_MINUTES."""
    import socket


    key, pub = make_key(open_tmp, "k")
    port, gate = free_port(), open_tmp / "gate"
    beat = Heartbeat(open_tmp / "beat")  # busy until the session is in use: no race with a loaded machine's boot
    env = _env(open_tmp, api, actions="vast", SSH_ENABLED="true", SSH_PORT=str(port), PUBLIC_KEY=pub,
               SSH_USER="pvtest", PODVISOR_BIND_HOST="127.0.0.1", AUTOSTOP_SSH_IDLE_MINUTES="0.1",
               AUTOSTOP_HEARTBEAT_FILE=str(open_tmp / "beat"))
    stack = stack_factory(env)
    stack.wait_state("sshd", "RUNNING")
    opts = ["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
    session = subprocess.Popen(["ssh", *opts, "-i", str(key), "-p", str(port), "pvtest@127.0.0.1",
                                f"while [ ! -e {gate} ]; do :; done; sleep 600"])
    scanners: list[socket.socket] = []
    try:
        wait_for(lambda: "1 ssh session(s) in use: pvtest@notty" in _decision(open_tmp).get("message", ""), 30, 0.2,
                 lambda: json.dumps(_decision(open_tmp)))
        for _ in range(20):  # sshd's MaxStartups (10 unauthenticated) drops some at random, as it would a scanner's
            scanners.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        held = [s for s in scanners if s.recv(64).startswith(b"SSH-")]
        assert len(held) >= 10, "connections held open at the banner, never logging in"
        opened = time.time()  # every connection is established: the next evaluation sees them all
        wait_for(lambda: _decision(open_tmp).get("evaluated_epoch", 0) > opened, 30, 0.2)
        ssh_signal = next(s for s in _decision(open_tmp)["signals"] if s["name"] == "sshd")
        assert ssh_signal["reason"].startswith("1 ssh session(s) in use"), "20 connections, one session"
        assert api.requests == []
        beat.stop()  # from here only the session can keep the pod
        wait_for(lambda: _decision(open_tmp).get("message", "").startswith("busy: 1 ssh session(s) in use"), 30, 0.2,
                 lambda: json.dumps(_decision(open_tmp)))
        gate.touch()  # the program is done; the session stays open, idle
        wait_for(lambda: api.requests, 60, 0.2, lambda: json.dumps(_decision(open_tmp)))
        assert session.poll() is None, "stopped while the session is still open"
        for sock in held:  # and the scanners' connections too
            sock.settimeout(0)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
        ssh_signal = next(s for s in _decision(open_tmp)["signals"] if s["name"] == "sshd")
        assert "1 ssh session(s) open but idle over 0.1 min: pvtest@notty" in ssh_signal["reason"], ssh_signal
    finally:
        beat.stop()
        gate.touch()
        session.kill()
        for sock in scanners:
            sock.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="the login user needs root")
def test_busy_jupyter_kernel_keeps_the_pod_and_polling_does_not(open_tmp, api, stack_factory):
    import websocket


    token, port = "jtok-0123456789", free_port()
    beat = Heartbeat(open_tmp / "beat")  # busy until the kernel is: no race with a loaded machine's boot
    env = _env(open_tmp, api, actions="vast", JUPYTER_ENABLED="true", JUPYTER_PORT=str(port), JUPYTER_TOKEN=token,
               JUPYTER_ROOT_DIR=str(open_tmp / "nb"), SSH_USER="pvtest", PODVISOR_BIND_HOST="127.0.0.1",
               AUTOSTOP_GRACE_SECONDS="0", AUTOSTOP_JUPYTER_IDLE_MINUTES="0.05",
               AUTOSTOP_HEARTBEAT_FILE=str(open_tmp / "beat"))
    stack = stack_factory(env)
    base, auth = f"http://127.0.0.1:{port}", {"Authorization": f"token {token}"}
    wait_for(lambda: stack.state("jupyter") == "RUNNING" and stack.status()["services"]["jupyter"]["ready"], 90, 0.5)
    kernel = requests.post(f"{base}/api/kernels", headers=auth, json={"name": "python3"}, timeout=30).json()
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/api/kernels/{kernel['id']}/channels?token={token}")
    ws.send(json.dumps({"header": {"msg_id": "1", "username": "t", "session": "s", "msg_type": "execute_request",
                                   "version": "5.3"}, "parent_header": {}, "metadata": {}, "channel": "shell",
                        "content": {"code": "import time; time.sleep(12)", "silent": False}}))
    wait_for(lambda: any(s["reason"].endswith("kernel(s) busy") for s in _decision(open_tmp).get("signals", [])),
             30, 0.2)
    beat.stop()
    _keeps_alive(open_tmp, api, "kernel(s) busy", 6)
    ws.close()
    # Once the kernel is idle, neither the watchdog's own polling nor a browser tab left open (JupyterLab polls
    # the API as long as it is open, which resets the server's own last_activity) keeps the pod.
    def tab_open() -> list:
        requests.get(f"{base}/api/kernels", headers=auth, timeout=10)
        requests.get(f"{base}/api/sessions", headers=auth, timeout=10)
        return api.requests

    wait_for(tab_open, 60, 0.2, lambda: json.dumps(_decision(open_tmp)))
    jupyter = next(s for s in _decision(open_tmp)["signals"] if s["name"] == "jupyter")
    assert "open tabs do not count" in jupyter["reason"], jupyter


def test_pending_upload_holds_the_stop_until_drained(tmp_path, api, stack_factory):
    s3 = S3Server(tmp_path / "s3")
    try:
        env = {**_env(tmp_path, api, actions="vast", UPLOAD_ENABLED="true", UPLOAD_WATCH_DIRS=str(tmp_path / "ck"),
                      UPLOAD_DESTINATIONS="s3://ckpt", UPLOAD_SETTLE_SECONDS="0.3", UPLOAD_RETRY_MAX_SECONDS="1"),
               **s3.env()}
        (tmp_path / "ck").mkdir()
        (tmp_path / "ck" / "step_1.pt").write_bytes(os.urandom(1 << 20))
        stack = stack_factory(env)
        wait_for(lambda: _decision(tmp_path).get("state") == "waiting", 30, 0.2, lambda: stack.output[-2000:])
        # The checkpoint (and, once written, the run manifest podvisor ships beside it).

        for text in (_decision(tmp_path)["message"], stack.status()["services"]["autostop"]["summary"]):
            assert int(re.search(r"waiting for (\d+) upload\(s\)", text).group(1)) >= 1, text
        time.sleep(2)
        assert api.requests == []
        s3.start()
        wait_for(lambda: api.requests, 40, 0.2, lambda: stack.output[-2000:])
        assert set(s3.objects()) == {"step_1.pt"}
    finally:
        s3.stop()


def test_jupyter_behind_a_password_hash_does_not_keep_the_pod_busy_forever(open_tmp, api, stack_factory):
    """Before: the probe got 403 (no token with a password), a failed probe counts as activity, no stop ever."""
    from jupyter_server.auth import passwd

    port = free_port()
    stack = stack_factory(_env(open_tmp, api, actions="exit", JUPYTER_ENABLED="true", JUPYTER_PORT=str(port),
                               JUPYTER_PASSWORD=passwd("correct horse battery"), SSH_USER="pvtest",
                               JUPYTER_ROOT_DIR=str(open_tmp / "nb"), PODVISOR_BIND_HOST="127.0.0.1",
                               INFERENCE_ENABLED="false"))
    assert stack.proc.wait(120) == 0, stack.output[-3000:]
    signals = {s["name"]: s for s in _decision(open_tmp)["signals"]}
    assert signals["jupyter"]["failed"] is False, signals["jupyter"]
    assert signals["jupyter"]["reason"] == "jupyter: no kernel or terminal activity"


def test_a_token_with_a_newline_is_an_error_that_names_it(tmp_path):
    from conftest import PODVISOR

    check = subprocess.run([PODVISOR, "config", "--check"], capture_output=True, text=True,
                           env=base_env(tmp_path / "state", JUPYTER_TOKEN="0a1b2c3d4e5f60718293\n"))
    assert check.returncode == 2 and "JUPYTER_TOKEN: holds a line break" in check.stdout
    assert "0a1b2c3d4e5f60718293" not in check.stdout
