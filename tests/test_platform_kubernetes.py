"""Kubernetes, from the shipped manifests' env and what the kubelet injects: the readiness probe passes on a
fresh pod with no model (so its Service sends SSH traffic), liveness follows supervisord, a Service named like
one of ours no longer disables it, optional secrets may be missing, and a failed JOB_COMMAND ends the container
with its exit code (the Job shows Failed) with the job's log shipped."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator

import pytest

from conftest import PODVISOR, Stack, base_env, ssh
from platforms import Pod, shared_fixtures, kubernetes_env, local_paths, pod_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a pod runs as root: login user, sshd privilege separation")
POD_NAME = "podvisor-7d9f8b6c5-x2x9z"
KUBELET = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443",
           "KUBERNETES_SERVICE_PORT_HTTPS": "443", "HOSTNAME": POD_NAME}


def _probe(env: dict[str, str], flag: str) -> int:
    return subprocess.run([PODVISOR, "status", flag], env=env, capture_output=True, text=True, timeout=60).returncode


@contextmanager
def _booted() -> Iterator[Pod]:
    with pod_dir() as pod:
        # deployment.yaml's env; of the Secret's optional keys only PUBLIC_KEY exists, POD_IP from the downward API.
        env = {**local_paths(pod), **kubernetes_env("deployment.yaml"), **KUBELET, "POD_IP": "127.0.0.1",
               "PUBLIC_KEY": pod.public_key, "UPLOAD_WATCH_DIRS": str(pod.root / "workspace" / "checkpoints")}
        pod.boot(env)
        pod.wait_ready_banner()
        yield pod


pods, pod, ending_pod = shared_fixtures(_booted)


def test_a_fresh_pod_is_ready_and_alive_without_a_model_or_optional_secrets(pod):
    env = pod.stack.env
    assert _probe(env, "--live") == 0
    assert _probe(env, "--ready") == 0
    services = pod.stack.status()["services"]
    assert services["inference"]["model_ready"] is False, "no model yet: that is the API's own /readyz"
    assert services["inference"]["state"] == "RUNNING" and services["jupyter"]["state"] == "RUNNING"
    assert "INFERENCE_API_TOKEN" not in env


def test_ssh_reaches_the_login_user_inside_the_cluster_and_root_stays_out(pod):
    sshd = pod.stack.status()["services"]["sshd"]
    assert sshd["endpoint"] == f"ssh runner@127.0.0.1 -p {pod.ports['ssh']} (inside the cluster)"
    result = ssh(pod.ports["ssh"], "runner", pod.key, "whoami; echo $HOSTNAME")
    assert result.returncode == 0 and result.stdout.split()[0] == "runner", result.stderr
    assert ssh(pod.ports["ssh"], "root", pod.key, "true").returncode == 255


def _probes(manifest: str) -> dict[str, dict]:
    """The probes of the manifest's container, as the kubelet reads them (timeoutSeconds defaults to 1)."""
    import yaml

    from platforms import DEPLOY

    for doc in yaml.safe_load_all((DEPLOY / "kubernetes" / manifest).read_text()):
        if doc and doc["kind"] == "Deployment":
            container = doc["spec"]["template"]["spec"]["containers"][0]
            return {k: v for k, v in container.items() if k.endswith("Probe")}
    raise AssertionError(f"no Deployment in {manifest}")


def test_the_manifests_probes_pass_within_their_timeouts_on_a_busy_node(pod):
    """Each probe's exec command, killed at its timeoutSeconds as the kubelet does, with two CPU-bound loops
    beside it on this 2-core machine: a probe that times out there restarts (or unreadies) a healthy pod."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        for name, probe in _probes("deployment.yaml").items():
            argv = [PODVISOR if part.endswith("/podvisor") else part for part in probe["exec"]["command"]]
            timeout = probe.get("timeoutSeconds", 1)
            for attempt in range(5):
                try:
                    result = subprocess.run(argv, env=pod.stack.env, capture_output=True, text=True,
                                            timeout=timeout)
                except subprocess.TimeoutExpired:
                    raise AssertionError(f"{name} ({' '.join(argv[1:])}) ran past its timeoutSeconds={timeout} "
                                         f"on attempt {attempt + 1}") from None
                assert result.returncode == 0, (name, result.stdout, result.stderr)
    finally:
        for loop in busy:
            loop.kill()


def test_liveness_fails_once_supervisord_is_gone_and_sigterm_exits_zero(ending_pod):
    env = ending_pod.stack.env
    assert ending_pod.stack.stop() == 0
    assert _probe(env, "--live") == 1 and _probe(env, "--ready") == 1


def test_a_service_link_where_a_port_belongs_is_a_warning_not_a_disabled_service(tmp_path):
    links = {"JUPYTER_PORT": "tcp://10.96.14.2:8888", "JUPYTER_SERVICE_HOST": "10.96.14.2",
             "JUPYTER_SERVICE_PORT": "8888", "JUPYTER_PORT_8888_TCP": "tcp://10.96.14.2:8888",
             "SSH_PORT": "tcp://10.96.14.3:22"}
    env = base_env(tmp_path / "state", **KUBELET, **links)
    check = subprocess.run([PODVISOR, "config", "--check"], env=env, capture_output=True, text=True)
    assert check.returncode == 1, check.stdout
    assert ("warning: JUPYTER_PORT: 'tcp://10.96.14.2:8888' is a Kubernetes service link (a Service named "
            "'jupyter' in this namespace sets it)") in check.stdout
    assert "enableServiceLinks: false" in check.stdout
    config = json.loads(subprocess.run([PODVISOR, "config", "--json"], env=env, capture_output=True, text=True).stdout)
    assert (config["jupyter"]["JUPYTER_PORT"], config["sshd"]["SSH_PORT"]) == (8888, 22)


def test_a_failed_job_fails_the_container_and_its_log_is_shipped(open_tmp):
    tmp_path = open_tmp  # the job runs as the login user: its script must be where that user can read it
    script = tmp_path / "train.py"
    script.write_text("import sys\nprint('loss went nan at step 41', flush=True)\nsys.exit(3)\n")
    script.chmod(0o755)
    volume = tmp_path / "volume"
    env = base_env(tmp_path / "state", **{
        **kubernetes_env("job.yaml"), **KUBELET, "PODVISOR_PROVIDER": "auto",
        "JOB_COMMAND": f"{sys.executable} {script}", "JOB_RESTART": "never", "REPO_URL": "",
        "PODVISOR_WORKSPACE": str(tmp_path / "workspace"), "REPO_DIR": str(tmp_path / "workspace" / "repo"),
        "UPLOAD_WATCH_DIRS": str(tmp_path / "workspace" / "checkpoints"), "UPLOAD_DESTINATIONS": f"file://{volume}",
        "RESTORE_ON_START": "false", "JOB_NPROC": "1"})
    stack = Stack(env)
    try:
        code = stack.proc.wait(120)
    finally:
        stack.kill()
    assert code == 3, stack.output[-3000:]
    assert "container exits 3: the job failed with exit code 3" in stack.output
    assert "loss went nan at step 41" in (volume / "_podvisor" / "job.log").read_text()

