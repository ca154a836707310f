"""A first launch on RunPod, from the shipped template and RunPod's injected variables: the SSH command RunPod's
Connect dialog shows works, the container log and status give the real addresses, the pod is ready without a
model, and the idle autostop stops the pod through RunPod's API (a loopback stand-in that records the call)."""
from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
from pathlib import Path
from contextlib import contextmanager
from typing import Iterator

import pytest

from conftest import PODVISOR, make_key, ssh, wait_for
from fakecloud import FakeRunPod, run_cloud
from platforms import Pod, shared_fixtures, PUBLIC_IP, Heartbeat, idle_quickly, local_paths, pod_dir, runpod_template_env

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a pod runs as root: login user, sshd privilege separation")
POD_ID = "k3xq9z1abcdef0"
# Canaries made at each run: found anywhere on disk, they leaked there (a copy of this file holds none of them).
RUNPOD_KEY = f"rpa_{secrets.token_hex(12)}"
GIT_TOKEN = f"ghp_{secrets.token_hex(16)}"
HF_TOKEN = f"hf_{secrets.token_hex(16)}"
SSH_PUBLIC_PORT = "40022"


@contextmanager
def _booted() -> Iterator[Pod]:
    api = FakeRunPod(key=RUNPOD_KEY)  # RunPod's REST v2, each request checked against its published schema
    api.pods[POD_ID] = FakeRunPod.pod({"id": POD_ID, "name": "podvisor", "status": "RUNNING",
                                       "image": "ghcr.io/podvisor/podvisor:0.1.0",
                                       "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 1}, "cloud": "SECURE",
                                       "polls": 0})
    with pod_dir() as pod:
        beat = Heartbeat(pod.root / "heartbeat")
        runpod = {  # what RunPod injects into every pod
            "RUNPOD_POD_ID": POD_ID, "RUNPOD_PUBLIC_IP": PUBLIC_IP, f"RUNPOD_TCP_PORT_{pod.ports['ssh']}": SSH_PUBLIC_PORT,
            "PUBLIC_KEY": pod.public_key, "RUNPOD_API_KEY": RUNPOD_KEY, "RUNPOD_GPU_COUNT": "1",
            "RUNPOD_CPU_COUNT": "16", "RUNPOD_POD_HOSTNAME": f"{POD_ID}-64410f2b",
        }
        test = idle_quickly(pod, "RUNPOD_API_URL", f"{api.url}/v2")
        secrets = {"GIT_TOKEN": GIT_TOKEN, "HF_TOKEN": HF_TOKEN}  # as a user sets them in the pod's env
        pod.boot({**local_paths(pod), **runpod_template_env(), **runpod, **test, **secrets,
                  "UPLOAD_WATCH_DIRS": str(pod.root / "workspace" / "checkpoints")})
        pod.extra.update(api=api, beat=beat)
        pod.wait_ready_banner()
        yield pod
        api.close()


pods, pod, ending_pod = shared_fixtures(_booted)


def test_the_connect_dialogs_command_logs_in_as_root_with_the_account_key(pod):
    log = pod.stack.output
    command = f"ssh root@{PUBLIC_IP} -p {SSH_PUBLIC_PORT}"
    assert re.search(rf"podvisor:   sshd +{re.escape(command)}  \(host keys ED25519 SHA256:\S+, ECDSA SHA256:", log)
    assert "sshd: 1 authorized key(s) for runner and root (1 from PUBLIC_KEY)" in log
    # The same command, with RunPod's proxy (public IP, mapped port) replaced by loopback.
    result = ssh(pod.ports["ssh"], "root", pod.key, "whoami; echo $RUNPOD_POD_ID; podvisor status")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["root", POD_ID]
    assert any(re.match(r"\s+sshd\s+RUNNING .* ready", line) for line in lines), result.stdout


def test_the_host_key_fingerprint_in_the_log_is_the_servers(pod):
    pub = pod.root / "state" / "services" / "sshd" / "ssh_host_ed25519_key.pub"
    fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", str(pub)], capture_output=True, text=True).stdout.split()[1]
    assert f"ED25519 {fingerprint}" in pod.stack.output


def test_the_login_user_runs_podvisor_status_with_and_without_sudo(pod):
    for command in ("podvisor status", "sudo podvisor status"):
        result = ssh(pod.ports["ssh"], "runner", pod.key, command)
        assert result.returncode == 0, (command, result.stderr)
        assert re.search(r"\s+sshd\s+RUNNING .* ready", result.stdout), (command, result.stdout)
        assert "<user>" not in result.stdout
    motd = ssh(pod.ports["ssh"], "runner", pod.key, "cat /etc/motd").stdout
    assert f"ssh root@{PUBLIC_IP} -p {SSH_PUBLIC_PORT}" in motd and "sudo podvisor" not in motd


def test_the_login_user_gets_its_own_tokens_and_can_read_no_control_credential_anywhere(pod):
    """A canary scan as the login user: the session, every file under the pod and /etc, /tmp and every
    process environment and command line it can read (Jupyter's among them: it runs as this user)."""
    patterns = base64.b64encode(f"{RUNPOD_KEY}\n{GIT_TOKEN}\n".encode()).decode()  # not in the scan's own cmdline
    scan = (f"echo hf=${{HF_TOKEN:-unset}} runpod=${{RUNPOD_API_KEY:-unset}} git=${{GIT_TOKEN:-unset}}; "
            f"grep -rlsF -f <(echo {patterns} | base64 -d) {pod.root} /etc /tmp /home /proc/[0-9]*/environ "
            f"/proc/[0-9]*/cmdline; echo scanned")
    result = ssh(pod.ports["ssh"], "runner", pod.key, scan)
    lines = result.stdout.splitlines()
    assert lines[0] == f"hf={HF_TOKEN} runpod=unset git=unset", result.stdout
    assert lines[1:] == ["scanned"], f"control credentials readable by the login user in: {lines[1:]}"
    jupyter = pod.stack.status()["services"]["jupyter"]["pid"]
    assert ssh(pod.ports["ssh"], "runner", pod.key, f"tr '\\0' '\\n' < /proc/{jupyter}/environ").stdout.count(
        "HF_TOKEN=") == 1, "Jupyter (and so its kernels) keeps the user's own token"
    # The services that use them still have them: the stop at the end of this module goes through RunPod's API
    # with RUNPOD_API_KEY.


CANARY_SCAN = r"""
import hashlib, json, os, sys
wanted, stop = set(sys.argv[1].split(",")), sys.argv[2]
hits, passes, seen = {}, 0, set()
while not os.path.exists(stop):
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        for what in ("environ", "cmdline"):
            try:
                with open(f"/proc/{pid}/{what}", "rb") as fh:
                    entries = fh.read().split(b"\0")
            except OSError:
                continue
            seen.add(pid)
            for entry in entries:
                if hashlib.sha256(entry.partition(b"=")[2] if what == "environ" else entry).hexdigest() in wanted:
                    hits[f"/proc/*/{what}"] = hits.get(f"/proc/*/{what}", 0) + 1
    passes += 1
print(json.dumps({"hits": hits, "passes": passes, "processes": len(seen)}))
"""


def test_no_process_of_the_login_user_holds_a_control_secret_while_jupyter_and_kernels_restart(pod):
    """The login user scans every process environment and command line it can read, in a loop, while Jupyter
    is started 100 times (each start goes through the same spawn as a restart after the user kills it) and
    kernels come and go: a program is switched to the login user only after its environment was cleaned, so
    no process of that user holds a control secret even for the first millisecond of its life."""
    import hashlib

    import requests

    from entrypoint.state_dir import StateDir

    wanted = ",".join(hashlib.sha256(c.encode()).hexdigest() for c in (RUNPOD_KEY, GIT_TOKEN))
    stop = f"/tmp/canary-stop-{secrets.token_hex(4)}"
    opts = ["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
    scan = subprocess.Popen(["ssh", *opts, "-i", str(pod.key), "-p", str(pod.ports["ssh"]), "runner@127.0.0.1",
                             f"python3 - {wanted} {stop}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    scan.stdin.write(CANARY_SCAN)
    scan.stdin.close()
    supervisor = StateDir(pod.root / "state").supervisor()
    token = (pod.root / "state" / "services" / "jupyter" / "token").read_text().strip()
    base = f"http://127.0.0.1:{pod.ports['jupyter']}/api"

    def answers() -> bool:
        try:
            return requests.get(f"{base}/status", headers={"Authorization": f"token {token}"}, timeout=5).ok
        except requests.ConnectionError:
            return False

    try:
        wait_for(lambda: ssh(pod.ports["ssh"], "runner", pod.key, "pgrep -u runner -f 'python3 -'").stdout, 30)
        starts = 0
        for cycle in range(100):
            supervisor.supervisor.stopProcess("jupyter", True)
            supervisor.supervisor.startProcess("jupyter", False)
            starts += 1
            if cycle % 25 == 24:  # the user's kernels, started by this Jupyter, then gone
                wait_for(answers, 60, 0.2)
                kernel = requests.post(f"{base}/kernels", headers={"Authorization": f"token {token}"}, json={},
                                       timeout=30).json()
                requests.delete(f"{base}/kernels/{kernel['id']}", headers={"Authorization": f"token {token}"},
                                timeout=30)
        # The user's own kill, answered by supervisord's restart.
        pid = supervisor.supervisor.getProcessInfo("jupyter")["pid"]
        assert ssh(pod.ports["ssh"], "runner", pod.key, f"kill -9 {pid}").returncode == 0
        wait_for(lambda: supervisor.supervisor.getProcessInfo("jupyter")["pid"] not in (0, pid), 30)
        starts += 1
    finally:
        Path(stop).touch()
        scan.wait(60)
        Path(stop).unlink(missing_ok=True)
    report = json.loads(scan.stdout.read() or "{}")
    assert report["hits"] == {}, f"control secrets read by the login user in {starts} starts: {report}"
    assert report["passes"] > starts and report["processes"] > 3, report  # it did look, all along
    wait_for(lambda: supervisor.supervisor.getProcessInfo("jupyter")["statename"] == "RUNNING", 60)


def test_status_from_a_shell_without_the_pods_environment_shows_the_running_stack(pod):
    """A `docker exec` or a second terminal with another environment: the state dir is all it shares."""
    bare = {"PATH": os.environ["PATH"], "PODVISOR_STATE_DIR": str(pod.root / "state"), "SSH_PORT": "2",
            "PODVISOR_PROVIDER": "local"}
    out = subprocess.run([PODVISOR, "status", "--json"], env=bare, capture_output=True, text=True, timeout=60)
    report = json.loads(out.stdout)
    assert (report["provider"], report["instance_id"]) == ("runpod", POD_ID), out.stdout
    sshd = report["services"]["sshd"]
    assert sshd["state"] == "RUNNING" and sshd["ready"] is True, sshd
    assert sshd["endpoint"] == f"ssh root@{PUBLIC_IP} -p {SSH_PUBLIC_PORT}"
    recorded = (pod.root / "state" / "environment.json").read_text()
    assert RUNPOD_KEY not in recorded and GIT_TOKEN not in recorded and HF_TOKEN not in recorded


def test_status_gives_runpods_addresses_and_where_the_jupyter_token_is(pod):
    services = pod.stack.status()["services"]
    assert services["sshd"]["endpoint"] == f"ssh root@{PUBLIC_IP} -p {SSH_PUBLIC_PORT}"
    assert services["jupyter"]["endpoint"] == f"https://{POD_ID}-{pod.ports['jupyter']}.proxy.runpod.net/lab"
    assert services["inference"]["endpoint"] == f"https://{POD_ID}-{pod.ports['inference']}.proxy.runpod.net/"
    token_file = pod.root / "state" / "services" / "jupyter" / "token"
    assert f"cat {token_file}" in services["jupyter"]["summary"]
    assert token_file.read_text().strip() not in pod.stack.output
    assert RUNPOD_KEY not in pod.stack.output


def test_ready_for_traffic_before_any_model_exists(pod):
    out = subprocess.run(["podvisor", "status", "--ready"], env=pod.stack.env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    inference = pod.stack.status()["services"]["inference"]
    assert inference["ready"] is True and inference["model_ready"] is False
    assert "no model served yet" in inference["summary"]


def test_podvisors_own_daemons_start_once_ssh_jupyter_and_the_api_are_up(pod):
    """On a pod of few cores the uploader's and the autostop's start took CPU from the services a person waits
    for: supervisord's log shows them spawned only after sshd, Jupyter and the API entered RUNNING."""
    log = (pod.root / "state" / "logs" / "supervisord.log").read_text().splitlines()

    def first(words: str) -> int:
        return next(i for i, line in enumerate(log) if words in line)

    interactive = max(first(f"success: {name} entered RUNNING state") for name in ("sshd", "jupyter", "inference"))
    for daemon in ("uploader", "autostop"):
        assert first(f"spawned: '{daemon}'") > interactive, "\n".join(log[:40])
    assert pod.stack.status()["services"]["uploader"]["state"] == "RUNNING"


def test_cloud_launch_waits_for_ssh_and_the_stack_then_ssh_pins_the_host_key_once(pod, open_tmp):
    """`podvisor cloud launch --wait` against a RunPod stand-in whose new pod comes up, two polls later, at this
    real stack's sshd; then `cloud ssh` and `cloud logs` over the key it pinned, and a changed key refused."""
    api = FakeRunPod(ssh_port=pod.ports["ssh"], polls_before_up=2)
    try:
        launched = run_cloud(api, open_tmp, "launch", "--provider", "runpod", "--gpu", "RTX 4090", "--image",
                             "ghcr.io/podvisor/podvisor:0.1.0", "--wait", "--interval", "0.5", "-i", str(pod.key))
        assert launched.returncode == 0, launched.stderr
        progress = launched.stderr.splitlines()
        assert any("no SSH address yet" in line for line in progress), progress
        assert progress[-1].startswith("ready after"), progress
        assert launched.stdout.splitlines() == [
            "pod pod1x7k2 is ready", f"  ssh      ssh -i {pod.key} -p {pod.ports['ssh']} root@127.0.0.1",
            f"  jupyter  https://{POD_ID}-{pod.ports['jupyter']}.proxy.runpod.net/lab  "
            f"(on the pod: token: generated, read it with `cat {pod.root / 'state' / 'services' / 'jupyter' / 'token'}` "
            "(or set JUPYTER_TOKEN))",
            f"  api      https://{POD_ID}-{pod.ports['inference']}.proxy.runpod.net/"]
        # The wait's readiness is the pod's own `podvisor status --ready` over SSH: it was asked.
        known_hosts = open_tmp / "podvisor" / "known_hosts"
        pinned = known_hosts.read_text().splitlines()
        server_key = (pod.root / "state" / "services" / "sshd" / "ssh_host_ed25519_key.pub").read_text().split()[1]
        found = subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{pod.ports['ssh']}", "-f", str(known_hosts)],
                               capture_output=True, text=True).stdout
        assert len(pinned) == 1 and server_key in found, (pinned, found)
        shell = run_cloud(api, open_tmp, "ssh", "--provider", "runpod", "pod1x7k2", "-i", str(pod.key), "--",
                          "whoami")
        assert (shell.returncode, shell.stdout) == (0, "root\n"), shell.stderr
        login_user = run_cloud(api, open_tmp, "ssh", "--provider", "runpod", "pod1x7k2", "-i", str(pod.key),
                               "--user", "runner", "--", "whoami")
        assert login_user.stdout == "runner\n", login_user.stderr
        logs = run_cloud(api, open_tmp, "logs", "--provider", "runpod", "pod1x7k2", "sshd", "-i", str(pod.key))
        assert logs.returncode == 0 and logs.stdout.startswith("== sshd (") and "Server listening" in logs.stdout
        assert known_hosts.read_text().splitlines() == pinned, "pinned once, not appended on every connection"
        # A pod re-created on the same address (or something else answering there): another key.
        _, other = make_key(open_tmp, "other_host_key")
        known_hosts.write_text(f"[127.0.0.1]:{pod.ports['ssh']} {' '.join(other.split()[:2])}\n")
        refused = run_cloud(api, open_tmp, "ssh", "--provider", "runpod", "pod1x7k2", "-i", str(pod.key), "--",
                            "whoami")
        assert refused.returncode == 1 and refused.stdout == ""
        assert f"the host key of [127.0.0.1]:{pod.ports['ssh']} is not the one podvisor pinned" in refused.stderr
        assert f"ssh-keygen -R '[127.0.0.1]:{pod.ports['ssh']}' -f {known_hosts}" in refused.stderr
        known_hosts.write_text("\n".join(pinned) + "\n")
        # Terminate asks the pod first: nothing is pending here, so it goes, and the pinned key goes with it.
        gone = run_cloud(api, open_tmp, "terminate", "--provider", "runpod", "pod1x7k2", "--yes", "-i", str(pod.key))
        assert gone.returncode == 0, gone.stderr
        assert [(r["method"], r["path"]) for r in api.requests[-2:]] == [("GET", "/v2/pods/pod1x7k2"),
                                                                        ("DELETE", "/v2/pods/pod1x7k2")]
        assert api.refused == []
        assert f"[127.0.0.1]:{pod.ports['ssh']}" not in known_hosts.read_text()
        assert all(r["headers"]["Authorization"] == f"Bearer {api.key}" and api.key not in r["path"]
                   for r in api.requests)
    finally:
        api.close()


def test_cloud_launch_nodes_waits_for_every_nodes_stack_then_terminates_the_cluster_once_none_has_uploads(pod,
                                                                                                         open_tmp):
    """`launch --nodes 2 --wait`: an Instant Cluster whose two nodes come up (the stand-in puts both at this real
    stack's sshd) is ready once each node's SSH and `podvisor status --ready` answer; `terminate` asks every node
    whether uploads are pending, then deletes the cluster in one call."""
    api = FakeRunPod(ssh_port=pod.ports["ssh"], polls_before_up=1)
    try:
        launched = run_cloud(api, open_tmp, "launch", "--provider", "runpod", "--gpu", "RTX 4090", "--nodes", "2",
                             "--image", "ghcr.io/podvisor/podvisor:0.1.0", "--wait", "--interval", "0.5", "-i",
                             str(pod.key))
        assert launched.returncode == 0, launched.stderr
        ssh = f"ssh -i {pod.key} -p {pod.ports['ssh']} root@127.0.0.1"
        assert launched.stdout.splitlines() == ["cluster clu1 is ready: 2 nodes", f"  node 0  {ssh}",
                                                f"  node 1  {ssh}"]
        asked = [r["path"] for r in api.requests if r["method"] == "GET" and r["path"].startswith("/v2/pods/")]
        assert {"/v2/pods/clu1n0x7k2", "/v2/pods/clu1n1x7k2"} <= set(asked), "each node was waited on"
        gone = run_cloud(api, open_tmp, "terminate", "--provider", "runpod", "clu1", "--yes", "-i", str(pod.key))
        assert gone.returncode == 0, gone.stderr
        assert (api.requests[-1]["method"], api.requests[-1]["path"]) == ("DELETE", "/v2/clusters/clu1")
        assert api.refused == [] and api.clusters == {}
    finally:
        api.close()


def test_idle_pod_is_stopped_through_runpods_api_then_exits_cleanly_on_runpods_sigterm(ending_pod):
    api = ending_pod.extra["api"]
    assert api.requests == [], "busy while the heartbeat beats"
    ending_pod.extra["beat"].stop()
    wait_for(lambda: api.requests, 60, 0.3, lambda: ending_pod.stack.output[-3000:])
    sent = api.requests[0]
    assert (sent["method"], sent["path"], sent["body"]) == ("POST", f"/v2/pods/{POD_ID}/action", {"action": "stop"})
    assert sent["headers"]["Authorization"] == f"Bearer {RUNPOD_KEY}"
    assert api.refused == [] and api.pods[POD_ID]["status"] == "EXITED", "RunPod v2 took the stop as sent"
    assert ending_pod.stack.stop() == 0  # RunPod stops the container with SIGTERM
