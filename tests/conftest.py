"""Shared fixtures: a real `podvisor start` (real supervisord) in a temporary state dir, and free ports."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Callable

import psutil
import pytest

VENV_BIN = Path(sys.executable).parent
PODVISOR = str(VENV_BIN / "podvisor")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def api():
    """A loopback stand-in for a provider's control API that records every request it is sent."""
    from fakeapi import FakeApi

    server = FakeApi()
    yield server
    server.close()


def wait_for(predicate: Callable[[], object], timeout: float = 30, interval: float = 0.1,
             what: str | Callable[[], str] = "") -> object:
    """Poll until `predicate` returns something truthy; fail the test with `what` (text, or a callable
    giving it, so a stack's output is read at failure time) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what() if callable(what) else what or predicate}")


def base_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """A clean environment: no provider variables leak in from the machine the tests run on."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER")}
    keep["PATH"] = f"{VENV_BIN}:{keep.get('PATH', '/usr/bin:/bin')}"
    return {**keep, "PODVISOR_STATE_DIR": str(state_dir), "PODVISOR_PROVIDER": "local", **extra}


def write_service(folder: Path, name: str, body: str) -> Path:
    """An extra service folder (PODVISOR_EXTRA_SERVICES) whose __init__.py is `body`."""
    pkg = folder / name
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(body))
    return pkg


class Stack:
    """`podvisor start` as a child process, its output captured line by line."""

    def __init__(self, env: dict[str, str], as_user: str | None = None) -> None:
        """`as_user`: start it as that normal user (setpriv execs, so signals reach podvisor itself); the output
        pipe is then that user's, as a terminal would be, so supervisord may open /dev/stdout."""
        self.env = env
        self.lines: list[str] = []
        runas: list[str] = []
        read, write = os.pipe()
        if as_user:
            import pwd

            user = pwd.getpwnam(as_user)
            os.fchown(write, user.pw_uid, user.pw_gid)
            runas = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]
        self.proc = subprocess.Popen([*runas, PODVISOR, "start"], env=env, stdout=write,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        os.close(write)
        self._reader = threading.Thread(target=self._read, args=(read,), daemon=True)
        self._reader.start()

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, errors="replace") as stream:
            for line in stream:
                self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def status(self) -> dict:
        out = subprocess.run([PODVISOR, "status", "--json"], env=self.env, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def state(self, name: str) -> str:
        return self.status()["services"].get(name, {}).get("state", "ABSENT")

    def wait_state(self, name: str, state: str, timeout: float = 30) -> dict:
        wait_for(lambda: self.state(name) == state, timeout, 0.3, lambda: f"{name} to be {state}\n{self.output}")
        return self.status()["services"][name]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        """Kill the stack and every program under it (supervisord puts each in a process group of its own)."""
        if self.proc.poll() is None:
            family = [self.proc.pid]
            try:
                family += [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]
            except psutil.Error:
                pass
            for pid in family:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(10)


@pytest.fixture
def stack_factory():
    """Start stacks; every one still running at the end of the test is killed with its process group."""
    started: list[Stack] = []

    def start(env: dict[str, str]) -> Stack:
        stack = Stack(env)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.kill()


@pytest.fixture
def s3(tmp_path):
    """A real S3 API server (`rclone serve s3`) on a free loopback port, over a folder under tmp_path."""
    from s3server import S3Server  # it imports this module's helpers

    server = S3Server(tmp_path / "s3")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def open_tmp():
    """A temp dir other users can traverse, outside /tmp: sshd reads authorized keys as the login user and
    refuses them under a world-writable directory such as /tmp (StrictModes)."""
    import shutil
    import tempfile

    base = Path("/var/lib/podvisor-tests")
    base.mkdir(mode=0o755, parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="t-", dir=base))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_key(folder: Path, name: str) -> tuple[Path, str]:
    """A fresh ed25519 key pair: (private key path, public key line)."""
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key, (folder / f"{name}.pub").read_text().strip()


def ssh(port: int, user: str, key: Path, command: str, known_hosts: Path | None = None,
        extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """A real OpenSSH client login, non-interactive, to 127.0.0.1."""
    opts = ["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10",
            "-o", "StrictHostKeyChecking=" + ("yes" if known_hosts and known_hosts.exists() else "no"),
            "-o", f"UserKnownHostsFile={known_hosts or '/dev/null'}", "-o", "LogLevel=ERROR"]
    return subprocess.run(["ssh", *opts, *extra, "-i", str(key), "-p", str(port), f"{user}@127.0.0.1", command],
                          capture_output=True, text=True, timeout=60)


REAL_COMPONENT_FIXTURES = {"stack_factory", "s3", "pod", "ending_pod", "host", "ending_host", "served", "open_tmp", "hub",
                           "laptop_venv"}
"""Fixtures that start real programs (a stack, an S3 server, a booted platform pod): a test using none of them
is in the fast layer (`make test-fast`, `-m fast`)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not REAL_COMPONENT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.fast)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With PODVISOR_TESTS_NO_SKIP=1 (CI: root, every binary installed) a skipped test fails the run: a skip
    there means a missing install step, not a test that cannot run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("PODVISOR_TESTS_NO_SKIP") == "1" and skipped and session.exitstatus == 0:
        reporter.write_line(f"{len(skipped)} test(s) skipped with PODVISOR_TESTS_NO_SKIP=1: failing the run",
                            red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
