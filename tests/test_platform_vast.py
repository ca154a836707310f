"""A first launch on Vast.ai, from the shipped template (its docker options) and Vast's injected variables:
the account's keys arrive the way Vast delivers them (a file it writes, /root/.ssh/authorized_keys), the
console's `ssh root@IP -p PORT` works, OPEN_BUTTON_TOKEN opens Jupyter, unpublished ports are named as such,
and the idle autostop stops the instance through Vast's API (a loopback stand-in that records the call)."""
from __future__ import annotations

import json
import os
import subprocess
from contextlib import contextmanager
from typing import Iterator

import pytest
import requests

from conftest import ssh, wait_for
from fakeapi import FakeApi
from fakecloud import FakeVast, run_cloud
from platforms import Pod, shared_fixtures, PUBLIC_IP, Heartbeat, idle_quickly, local_paths, pod_dir, vast_template_env

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a pod runs as root: login user, sshd privilege separation")
INSTANCE = "31415926"
VAST_KEY = "vast-instance-key-0123456789abcdef"
OPEN_BUTTON_TOKEN = "9c0ffee5d1ab4f2e8a7b6c5d4e3f2a1b"


@contextmanager
def _booted() -> Iterator[Pod]:
    api = FakeApi(body={"success": True})
    with pod_dir() as pod:
        # Vast writes the account's keys here (the real path is /root/.ssh/authorized_keys; this test machine's
        # own root keys are left alone, so the variable points at a file written the same way).
        keys = pod.root / "root-ssh" / "authorized_keys"
        keys.parent.mkdir()
        keys.write_text(f"# keys from the Vast account\n{pod.public_key}\n")
        beat = Heartbeat(pod.root / "heartbeat")
        work = local_paths(pod)
        vast = {
            "CONTAINER_ID": INSTANCE, "VAST_CONTAINERLABEL": f"C.{INSTANCE}", "PUBLIC_IPADDR": PUBLIC_IP,
            f"VAST_TCP_PORT_{pod.ports['ssh']}": "41022", f"VAST_TCP_PORT_{pod.ports['jupyter']}": "41088",
            "CONTAINER_API_KEY": VAST_KEY, "OPEN_BUTTON_TOKEN": OPEN_BUTTON_TOKEN,
            "DATA_DIRECTORY": work.pop("PODVISOR_WORKSPACE"), "SSH_AUTHORIZED_KEYS_FILES": str(keys),
        }
        test = {**idle_quickly(pod, "VAST_API_URL", f"{api.url}/api/v0"), "UPLOAD_WATCH_DIRS": work["UPLOAD_WATCH_DIRS"]}
        pod.boot({**work, **vast_template_env(), **vast, **test})
        pod.extra.update(api=api, beat=beat, keys=keys)
        pod.wait_ready_banner()
        yield pod
        api.close()


pods, pod, ending_pod = shared_fixtures(_booted)


def test_the_account_key_vast_wrote_logs_in_as_root_and_as_the_login_user(pod):
    assert f"sshd: 1 authorized key(s) for runner and root (1 from {pod.extra['keys']})" in pod.stack.output
    assert f"podvisor:   sshd       ssh root@{PUBLIC_IP} -p 41022" in pod.stack.output
    for user in ("root", "runner"):
        result = ssh(pod.ports["ssh"], user, pod.key, "whoami; echo $CONTAINER_ID")
        assert result.returncode == 0, (user, result.stderr)
        assert result.stdout.split() == [user, INSTANCE]


def test_open_button_token_is_jupyters_token_and_never_logged(pod):
    jupyter = pod.stack.status()["services"]["jupyter"]
    assert jupyter["endpoint"] == f"http://{PUBLIC_IP}:41088/lab"
    assert jupyter["ready"] is True and "your JUPYTER_TOKEN" in jupyter["summary"]
    url = f"http://127.0.0.1:{pod.ports['jupyter']}/api/status"
    assert requests.get(url, headers={"Authorization": f"token {OPEN_BUTTON_TOKEN}"}, timeout=5).status_code == 200
    assert requests.get(url, timeout=5).status_code == 403
    assert OPEN_BUTTON_TOKEN not in pod.stack.output and VAST_KEY not in pod.stack.output


def test_data_directory_is_the_workspace(pod):
    status = pod.stack.status()
    assert status["provider"] == "vast" and status["instance_id"] == INSTANCE
    out = subprocess.run(["podvisor", "config", "--json"], env=pod.stack.env, capture_output=True, text=True)
    assert json.loads(out.stdout)["podvisor"]["PODVISOR_WORKSPACE"] == str(pod.root / "workspace")


def test_a_port_the_template_does_not_publish_is_named_not_given_a_wrong_address(pod):
    inference = pod.stack.status()["services"]["inference"]
    assert inference["endpoint"].startswith(f"port {pod.ports['inference']} is not published to the internet")
    assert "docker options (-p)" in inference["endpoint"]


def test_cloud_template_push_then_launch_from_it_waits_for_this_stack(pod, open_tmp):
    """The repo's Vast template pushed, an instance rented from it through a Vast stand-in whose instance comes
    up at this real stack's sshd; the wait ends on the pod's own `podvisor status --ready`."""
    api = FakeVast(ssh_port=pod.ports["ssh"], polls_before_up=2)
    try:
        assert run_cloud(api, open_tmp, "template", "push", "--provider", "vast").returncode == 0
        launched = run_cloud(api, open_tmp, "launch", "--provider", "vast", "--gpu", "RTX 4090", "--template",
                             "podvisor", "--wait", "--interval", "0.5", "-i", str(pod.key))
        assert launched.returncode == 0, launched.stderr
        rent = next(r for r in api.requests if r["path"].startswith("/api/v0/asks/"))
        assert rent["path"] == "/api/v0/asks/9002/" and rent["body"]["template_hash_id"] == "h" + "1".rjust(31, "0")
        lines = launched.stdout.splitlines()
        assert lines[:2] == ["pod 4242 is ready", f"  ssh      ssh -i {pod.key} -p {pod.ports['ssh']} root@127.0.0.1"]
        assert lines[2].startswith(f"  jupyter  http://{PUBLIC_IP}:41088/lab  (on the pod: ") and "JUPYTER_TOKEN" in lines[2]
        status = run_cloud(api, open_tmp, "status", "--provider", "vast", "4242", "-i", str(pod.key))
        assert status.returncode == 0 and "stack  ready" in status.stdout, status.stdout + status.stderr
        assert run_cloud(api, open_tmp, "stop", "--provider", "vast", "4242").returncode == 0
        assert (api.requests[-1]["method"], api.requests[-1]["body"]) == ("PUT", {"state": "stopped"})
        assert all(r["headers"]["Authorization"] == f"Bearer {api.key}" for r in api.requests)
    finally:
        api.close()


def test_idle_instance_is_stopped_through_vasts_api(ending_pod):
    api = ending_pod.extra["api"]
    assert api.requests == []
    ending_pod.extra["beat"].stop()
    wait_for(lambda: api.requests, 60, 0.3, lambda: ending_pod.stack.output[-3000:])
    sent = api.requests[0]
    assert (sent["method"], sent["path"], sent["body"]) == ("PUT", f"/api/v0/instances/{INSTANCE}/", {"state": "stopped"})
    assert sent["headers"]["Authorization"] == f"Bearer {VAST_KEY}"
    assert ending_pod.stack.stop() == 0
