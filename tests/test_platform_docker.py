"""`docker run` on a workstation: no provider variables, the container's hostname, the user's key in
PUBLIC_KEY, and a login user without sudo (SSH_SUDO=false: a shared box). The SSH address says which port to
publish, the login user (not root) gets in and sees the status but cannot control or read root's credentials,
the HEALTHCHECK command passes once SSH answers, and `docker stop` (SIGTERM) ends the container with 0."""
from __future__ import annotations

import os
import re
import subprocess
from contextlib import contextmanager
from typing import Iterator

import pytest

from conftest import PODVISOR, ssh
from platforms import Pod, shared_fixtures, local_paths, pod_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a container runs as root: login user, sshd privilege separation")


@contextmanager
def _booted() -> Iterator[Pod]:
    with pod_dir() as pod:
        # Docker is detected from /.dockerenv, which this test machine may lack: the provider is named instead.
        docker = {"PODVISOR_PROVIDER": "docker", "HOSTNAME": "3f2a9c1e7b44", "PUBLIC_KEY": pod.public_key,
                  "SSH_SUDO": "false"}
        pod.boot({**local_paths(pod), **docker, "JUPYTER_ENABLED": "false", "INFERENCE_ENABLED": "false"})
        pod.wait_ready_banner()
        yield pod


pods, pod, ending_pod = shared_fixtures(_booted)


def test_the_address_says_which_port_to_publish_and_the_login_user_gets_in(pod):
    port = pod.ports["ssh"]
    assert f"podvisor:   sshd       ssh runner@HOST -p {port} (publish it: docker run -p {port}:{port})" in pod.stack.output
    result = ssh(port, "runner", pod.key, "whoami")
    assert result.returncode == 0 and result.stdout.strip() == "runner", result.stderr
    assert ssh(port, "root", pod.key, "true").returncode == 255, "root stays out unless SSH_PERMIT_ROOT=true"


def test_without_sudo_the_login_user_sees_the_status_but_holds_no_control_credential(pod):
    state = pod.root / "state"
    result = ssh(pod.ports["ssh"], "runner", pod.key,
                 f"podvisor status; cat {state / 'supervisor.auth'} {state / 'supervisord.conf'}; sudo -n true")
    assert re.search(r"\s+sshd\s+RUNNING +pid \d+, up \S+  ready", result.stdout), result.stdout + result.stderr
    assert "the control socket is root's (SSH_SUDO=false)" in result.stdout
    assert result.stderr.count("Permission denied") == 2, result.stderr
    assert result.returncode != 0, "sudo worked"
    password = (state / "supervisor.auth").read_text().strip()
    assert password not in result.stdout


def test_the_healthcheck_command_passes(pod):
    health = subprocess.run([PODVISOR, "status", "--ready"], env=pod.stack.env, capture_output=True, text=True)
    assert health.returncode == 0, health.stdout


def test_docker_stop_exits_zero(ending_pod):
    assert ending_pod.stack.stop() == 0
