"""A real OpenSSH sshd on a loopback port, reached by the real OpenSSH client."""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import PODVISOR, Stack, base_env, free_port, make_key, ssh, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creating the login user needs root")
USER = "pvtest"


def _env(state, port, **extra):
    return base_env(state, PODVISOR_BIND_HOST="127.0.0.1", SSH_PORT=str(port), SSH_USER=USER,
                    PODVISOR_TEST_MARKER="seen-in-session", **extra)


def test_key_login_sees_container_env_and_everything_else_is_refused(open_tmp, stack_factory):
    key, pub = make_key(open_tmp, "good")
    wrong, _ = make_key(open_tmp, "wrong")
    port = free_port()
    stack = stack_factory(_env(open_tmp / "state", port, PUBLIC_KEY=pub))
    stack.wait_state("sshd", "RUNNING")
    assert stack.status()["services"]["sshd"]["ready"] is True
    result = ssh(port, USER, key, "whoami; echo $PODVISOR_TEST_MARKER")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [USER, "seen-in-session"]
    assert ssh(port, USER, wrong, "true").returncode == 255
    assert ssh(port, "root", key, "true").returncode == 255, "root may not log in unless SSH_PERMIT_ROOT"
    # Only public keys are offered: a password or keyboard-interactive login cannot even be attempted.
    verbose = ssh(port, USER, wrong, "true", extra=("-v", "-o", "LogLevel=DEBUG1"))
    offered = [l for l in verbose.stderr.splitlines() if "Authentications that can continue" in l]
    assert offered and all(l.rstrip().endswith("publickey") for l in offered)
    # Readable by the login user, changed by root alone: root's shells source it too.
    env_file = Path("/etc/podvisor/session.env")
    assert oct(env_file.stat().st_mode & 0o777) == "0o640"
    import pwd
    assert (env_file.stat().st_uid, env_file.stat().st_gid) == (0, pwd.getpwnam(USER).pw_gid)
    assert ssh(port, USER, key, f"echo x >> {env_file} || echo refused").stdout.strip().endswith("refused")
    sudo = ssh(port, USER, key, "sudo -n true && echo sudo-ok")
    assert "sudo-ok" in sudo.stdout
    assert stack.stop() == 0


def test_root_login_with_key_when_permitted(open_tmp, stack_factory):
    key, pub = make_key(open_tmp, "good")
    port = free_port()
    stack = stack_factory(_env(open_tmp / "state", port, SSH_PUBLIC_KEY=pub, SSH_PERMIT_ROOT="true"))
    stack.wait_state("sshd", "RUNNING")
    result = ssh(port, "root", key, "whoami")
    assert result.returncode == 0 and result.stdout.strip() == "root"


def test_host_key_survives_a_restart(open_tmp, stack_factory):
    key, pub = make_key(open_tmp, "good")
    known = open_tmp / "known_hosts"
    port = free_port()
    env = _env(open_tmp / "state", port, PUBLIC_KEY=pub)
    stack = stack_factory(env)
    stack.wait_state("sshd", "RUNNING")
    assert ssh(port, USER, key, "true", known_hosts=known).returncode == 0
    assert known.read_text().strip()
    assert stack.stop() == 0
    stack = stack_factory(env)
    stack.wait_state("sshd", "RUNNING")
    # StrictHostKeyChecking=yes against the recorded key: a new host key would be refused.
    result = ssh(port, USER, key, "echo again", known_hosts=known)
    assert result.returncode == 0, result.stderr
    assert stack.stop() == 0


def test_malformed_keys_are_reported_by_position_and_the_good_ones_work(open_tmp, stack_factory):
    key1, pub1 = make_key(open_tmp, "one")
    key2, pub2 = make_key(open_tmp, "two")
    keys = "\n".join([pub1, "ssh-ed25519 AAAAnot-a-key user@host", pub2])
    port = free_port()
    env = _env(open_tmp / "state", port, SSH_AUTHORIZED_KEYS=keys)
    check = subprocess.run([PODVISOR, "config", "--check"], env=env, capture_output=True, text=True)
    assert check.returncode == 2
    assert "SSH_AUTHORIZED_KEYS: key #2 is not a valid public key" in check.stdout
    assert "AAAAnot-a-key" not in check.stdout
    stack = stack_factory(env)
    stack.wait_state("sshd", "RUNNING")
    assert "SSH_AUTHORIZED_KEYS key #2 is not a valid public key" in stack.output
    for key in (key1, key2):
        assert ssh(port, USER, key, "true").returncode == 0


def test_ssh_user_root_is_never_locked_out(open_tmp, stack_factory):
    """SSH_USER=root with root logins off installed the key, then refused every login."""
    key, pub = make_key(open_tmp, "good")
    port = free_port()
    env = base_env(open_tmp / "state", PODVISOR_BIND_HOST="127.0.0.1", SSH_PORT=str(port), SSH_USER="root",
                   SSH_PERMIT_ROOT="false", PUBLIC_KEY=pub, JUPYTER_ENABLED="false", INFERENCE_ENABLED="false")
    stack = stack_factory(env)
    stack.wait_state("sshd", "RUNNING")
    result = ssh(port, "root", key, "whoami")
    assert result.returncode == 0 and result.stdout.strip() == "root", result.stderr
    assert "SSH_PERMIT_ROOT=false is ignored" in stack.output


def test_an_environment_with_every_warning_of_the_corpus_boots_and_ssh_works(open_tmp, stack_factory):
    """What passes `config --check` with warnings only (lookalikes, Kubernetes service links, clashing aliases)
    must boot: the warnings in the log, SSH answering."""
    from test_config import WARNINGS

    merged = {k: v for env, _, _ in WARNINGS for k, v in env.items() if k != "SSH_PORT"}  # the test's port wins
    key, pub = make_key(open_tmp, "good")
    port = free_port()
    env = _env(open_tmp / "state", port, PUBLIC_KEY=pub, JUPYTER_ENABLED="false", INFERENCE_ENABLED="false", **merged)
    check = subprocess.run([PODVISOR, "config", "--check"], env=env, capture_output=True, text=True, timeout=60)
    assert check.returncode == 1, check.stdout
    stack = stack_factory(env)
    stack.wait_state("sshd", "RUNNING")
    result = ssh(port, USER, key, "whoami")
    assert result.returncode == 0 and result.stdout.strip() == USER, result.stderr
    for _, variable, _ in WARNINGS:
        assert f"config: {variable}: " in stack.output, variable
    assert "hf_one_0123456789" not in stack.output and "hf_two_0123456789" not in stack.output


def test_root_and_the_login_user_log_in_when_the_state_dir_is_on_a_volume_the_login_user_owns(open_tmp,
                                                                                             stack_factory):
    """RunPod: the volume is /workspace, podvisor makes it the login user's, and the state dir lives under it;
    sshd's StrictModes refused root's keys kept there ("bad ownership or modes for directory /workspace")."""
    key, pub = make_key(open_tmp, "good")
    workspace = open_tmp / "workspace"
    workspace.mkdir()  # root-owned, as a fresh volume is
    port = free_port()
    stack = stack_factory(_env(workspace / ".podvisor", port, PODVISOR_WORKSPACE=str(workspace), PUBLIC_KEY=pub,
                               SSH_PERMIT_ROOT="true", UPLOAD_WATCH_DIRS=str(workspace / "checkpoints")))
    stack.wait_state("sshd", "RUNNING")
    assert workspace.stat().st_uid == pwd.getpwnam(USER).pw_uid, "podvisor did not give the volume to the user"
    for user in ("root", USER):
        result = ssh(port, user, key, "whoami")
        assert result.returncode == 0 and result.stdout.strip() == user, (user, result.stderr)
    assert stack.status()["services"]["sshd"]["ready"] is True
    assert stack.stop() == 0


def test_an_sshd_that_would_refuse_every_key_is_not_ready_and_says_why(stack_factory):
    """A clone under /tmp running `make run` as a normal user: the keys sit under a world-writable folder."""
    key_dir = Path(tempfile.mkdtemp(prefix="podvisor-keys-", dir="/var/lib"))
    state = Path(tempfile.mkdtemp(prefix="podvisor-tmp-state-", dir="/tmp"))
    try:
        _, pub = make_key(key_dir, "good")
        user = pwd.getpwnam(USER) if _exists(USER) else None
        if user is None:
            subprocess.run(["useradd", "--create-home", USER], check=True)
            user = pwd.getpwnam(USER)
        os.chown(state, user.pw_uid, user.pw_gid)
        port = free_port()
        env = _env(state / "state", port, PUBLIC_KEY=pub, UPLOAD_WATCH_DIRS=str(state / "ck"),
                   HOME=user.pw_dir, JUPYTER_ENABLED="false", INFERENCE_ENABLED="false")
        stack = Stack(env, as_user=USER)
        try:
            wait_for(lambda: "would refuse every key" in stack.output, 60, 0.3, lambda: stack.output[-3000:])
            assert f"bad ownership or modes for directory {state.parent}" in stack.output
            sshd = wait_for(lambda: (info := stack.status()["services"]["sshd"])["state"] == "RUNNING" and info, 30,
                            0.3, lambda: stack.output[-3000:])
            assert sshd["ready"] is False
            assert f"sshd refuses {USER}'s keys: bad ownership or modes for directory /tmp" in sshd["ready_detail"]
        finally:
            stack.kill()
    finally:
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(key_dir, ignore_errors=True)


def test_an_sshd_blocked_at_boot_is_not_ready_says_why_and_comes_back_on_its_own(open_tmp, stack_factory):
    """Its port held by another program at boot: sshd is the user's way in, so it is never left down for good."""
    key, pub = make_key(open_tmp, "good")
    port = free_port()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    try:
        stack = stack_factory(_env(open_tmp / "state", port, PUBLIC_KEY=pub, JUPYTER_ENABLED="false",
                                   INFERENCE_ENABLED="false"))
        wait_for(lambda: "service sshd is down" in stack.output, 60, 0.3, lambda: stack.output[-3000:])
        ready = subprocess.run([PODVISOR, "status", "--ready"], env=stack.env, capture_output=True, text=True,
                               timeout=60)
        assert ready.returncode == 1
        assert "not ready: sshd is down (FATAL)" in ready.stderr and "keeps trying" in ready.stderr, ready.stderr
    finally:
        blocker.close()
    wait_for(lambda: stack.status()["services"]["sshd"].get("ready") is True, 90, 0.5, lambda: stack.output[-3000:])
    result = ssh(port, USER, key, "whoami")
    assert result.returncode == 0 and result.stdout.strip() == USER, result.stderr
    assert "reason" not in stack.status()["services"]["sshd"]
    assert stack.stop() == 0


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_a_session_path_keeps_what_the_login_user_can_reach(tmp_path):
    from entrypoint.session import session_path

    hidden = tmp_path / "root-only"
    (hidden / "bin").mkdir(parents=True)
    hidden.chmod(0o700)  # root's /root/.pyenv/shims, say
    shared = Path("/usr/local/lib")
    user = USER if _exists(USER) else "nobody"
    path = session_path(f"{hidden / 'bin'}:{shared}:/usr/bin", user)
    parts = path.split(":")
    assert str(hidden / "bin") not in parts
    assert parts[:2] == [str(shared), "/usr/bin"] and "/bin" in parts and "/usr/local/bin" in parts
