"""A bare GPU host (Lambda-style) run by a normal user, not root: `podvisor start` keeps its state where that
user may write (in the workspace they named, which is theirs), creates no user, and takes SSH port 2222 (the
host's own sshd has 22, and a normal user may not bind it): the user logs in to it with their key."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from conftest import PODVISOR, VENV_BIN, Stack, free_port, make_key, ssh, wait_for
from platforms import shared_fixtures

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="making a normal user to run as needs root")
USER = "pvplain"


@contextmanager
def _booted() -> Iterator[tuple[Stack, Path, str]]:
    if subprocess.run(["id", USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", USER], check=True)
    home = pwd.getpwnam(USER).pw_dir
    state = os.path.join(home, "work", ".podvisor")
    shutil.rmtree(state, ignore_errors=True)
    keys = os.path.join(home, "keys")
    os.makedirs(keys, exist_ok=True)
    key, pub = make_key(Path(keys), "laptop")
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": home, "USER": USER, "LANG": "C.UTF-8",
           "PODVISOR_PROVIDER": "local",  # this test machine may itself look like a container
           "PODVISOR_BIND_HOST": "127.0.0.1", "PUBLIC_KEY": pub, "JUPYTER_ENABLED": "false",
           "INFERENCE_ENABLED": "false", "AUTOSTOP_ENABLED": "false", "PODVISOR_WORKSPACE": os.path.join(home, "work"),
           "UPLOAD_WATCH_DIRS": os.path.join(home, "work", "checkpoints")}
    # 2222, a plain user's default, is `make run`'s port too: the live stack takes a free one, and the default
    # is read from the user's own `podvisor config` (test_a_plain_users_ssh_port_is_2222_by_default).
    stack = Stack({**env, "SSH_PORT": str(free_port())}, as_user=USER)
    wait_for(lambda: "ready: all" in stack.output, 90, 0.3, lambda: stack.output[-3000:])
    try:
        yield stack, key, state
    finally:
        stack.kill()
        shutil.rmtree(keys, ignore_errors=True)


hosts, host, ending_host = shared_fixtures(_booted, "host")


def test_state_in_the_users_own_folder_and_no_user_created(host):
    stack, _, state = host
    assert f"state in {state}" in stack.output
    assert f"not root: SSH, Jupyter and the job run as {USER}" in stack.output
    assert os.stat(state).st_uid == pwd.getpwnam(USER).pw_uid
    assert stack.proc.poll() is None


def test_a_plain_users_ssh_port_is_2222_by_default(host):
    stack, _, _ = host
    env = {k: v for k, v in stack.env.items() if k != "SSH_PORT"}
    shown = subprocess.run(["setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups", PODVISOR, "config",
                            "--json"], env=env, capture_output=True, text=True)
    assert json.loads(shown.stdout)["sshd"]["SSH_PORT"] == 2222, shown.stderr


def test_ssh_as_that_user_and_status_works_for_them(host):
    stack, key, _ = host
    port = int(stack.env["SSH_PORT"])
    assert f"ssh pvplain@127.0.0.1 -p {port}" in stack.output
    result = ssh(port, USER, key, "whoami")
    assert result.returncode == 0 and result.stdout.strip() == USER, result.stderr
    status = subprocess.run(["setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups", PODVISOR, "status",
                             "--ready"], env=stack.env, capture_output=True, text=True)
    assert status.returncode == 0, status.stdout + status.stderr


def test_sigterm_stops_it_cleanly(ending_host):
    stack, _, _ = ending_host
    assert stack.stop() == 0
