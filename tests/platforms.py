"""Each platform's conventions as env fixtures: the variables it injects into a container, the env its template
(as shipped in deploy/) sets, and the command its console shows. A test boots the stack with one of these and
checks what a user of that platform sees, not what podvisor's own defaults would give.

Values follow the platforms' documented variables: RunPod injects RUNPOD_POD_ID, RUNPOD_PUBLIC_IP,
RUNPOD_TCP_PORT_<container port>, PUBLIC_KEY and a pod-scoped RUNPOD_API_KEY; Vast injects CONTAINER_ID,
VAST_CONTAINERLABEL, PUBLIC_IPADDR, VAST_TCP_PORT_<container port>, CONTAINER_API_KEY, OPEN_BUTTON_TOKEN and
writes the account's SSH keys to /root/.ssh/authorized_keys; Kubernetes injects KUBERNETES_SERVICE_HOST/PORT,
HOSTNAME (the pod name) and, unless enableServiceLinks is false, <SERVICE>_PORT=tcp://ip:port for each Service.
Addresses are from the documentation ranges (RFC 5737), so nothing here can reach a real host.
"""
from __future__ import annotations

import json
import shlex
import shutil
import tempfile
import threading
import time
from contextlib import AbstractContextManager as ContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import yaml

from conftest import Stack, base_env, free_port, make_key, wait_for

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
PUBLIC_IP = "203.0.113.7"


def runpod_template_env() -> dict[str, str]:
    return json.loads((DEPLOY / "runpod" / "template.json").read_text())["env"]


def vast_template_env() -> dict[str, str]:
    flags = shlex.split(json.loads((DEPLOY / "vast" / "template.json").read_text())["env"])
    return dict(value.split("=", 1) for flag, value in zip(flags[::2], flags[1::2]) if flag == "-e")


def kubernetes_env(manifest: str) -> dict[str, str]:
    """The literal env of the manifest's pod template (secrets are the test's to add)."""
    for doc in yaml.safe_load_all((DEPLOY / "kubernetes" / manifest).read_text()):
        if doc and doc["kind"] in ("Deployment", "Job"):
            container = doc["spec"]["template"]["spec"]["containers"][0]
            return {e["name"]: e["value"] for e in container["env"] if "value" in e}
    raise AssertionError(f"no pod template in {manifest}")


@dataclass
class Pod:
    """One booted stack and what a user of it holds: their key, the ports, the loopback fakes."""

    root: Path
    key: Path
    public_key: str
    ports: dict[str, int]
    stack: Stack | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def boot(self, env: dict[str, str]) -> Stack:
        self.stack = Stack(env)
        return self.stack

    def wait_ready_banner(self, timeout: float = 120) -> str:
        assert self.stack is not None
        wait_for(lambda: "ready" in self.stack.output and "  sshd " in self.stack.output, timeout, 0.3,
                 lambda: f"the ready lines\n{self.stack.output[-4000:]}")
        return self.stack.output


class Shared:
    """One booted stack shared by a module's tests. A test that ends it takes it (`ending_pod`): the next test
    that needs one boots a fresh one. No test depends on running after another, and in file order (the ending
    test last) a module boots once."""

    def __init__(self, boot: Callable[[], ContextManager[Any]]) -> None:
        self.boot, self.held, self.current = boot, ExitStack(), None

    def get(self) -> Any:
        if self.current is None:
            self.current = self.held.enter_context(self.boot())
        return self.current

    def take(self) -> Any:
        found, self.current = self.get(), None
        return found


def shared_fixtures(boot: Callable[[], ContextManager[Any]], name: str = "pod") -> tuple[Any, Any, Any]:
    """The fixtures of a module whose tests share one booted stack: `<name>s` (the module's), `<name>` (the
    current one) and `ending_<name>` (for a test that stops it). A module assigns them to module names."""

    @pytest.fixture(scope="module", name=f"{name}s")
    def shared() -> Iterator[Shared]:
        booted = Shared(boot)
        with booted.held:
            yield booted

    @pytest.fixture(name=name)
    def current(request: pytest.FixtureRequest) -> Any:
        return request.getfixturevalue(f"{name}s").get()

    @pytest.fixture(name=f"ending_{name}")
    def ending(request: pytest.FixtureRequest) -> Any:
        return request.getfixturevalue(f"{name}s").take()

    return shared, current, ending


@contextmanager
def pod_dir() -> Iterator[Pod]:
    """A folder other users can traverse (sshd's StrictModes refuses keys under /tmp), a key, free ports."""
    base = Path("/var/lib/podvisor-tests")
    base.mkdir(mode=0o755, parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="p-", dir=base))
    root.chmod(0o755)
    key, pub = make_key(root, "account")
    pod = Pod(root, key, pub, {"ssh": free_port(), "jupyter": free_port(), "inference": free_port()})
    try:
        yield pod
    finally:
        if pod.stack is not None:
            pod.stack.kill()
        shutil.rmtree(root, ignore_errors=True)


def local_paths(pod: Pod, **extra: str) -> dict[str, str]:
    """What must differ from a real pod on a shared test machine: loopback, free ports, folders under the test's
    own dir. Everything else comes from the platform's fixture."""
    work = pod.root / "workspace"
    return base_env(pod.root / "state", PODVISOR_PROVIDER="auto", PODVISOR_BIND_HOST="127.0.0.1",
                    PODVISOR_WORKSPACE=str(work), SSH_PORT=str(pod.ports["ssh"]),
                    JUPYTER_PORT=str(pod.ports["jupyter"]), JUPYTER_ROOT_DIR=str(work),
                    INFERENCE_PORT=str(pod.ports["inference"]), INFERENCE_MODEL_DIR=str(work / "models"),
                    UPLOAD_WATCH_DIRS=str(work / "checkpoints"), REPO_DIR=str(work / "repo"), **extra)


def idle_quickly(pod: Pod, api_variable: str, api_url: str) -> dict[str, str]:
    """Autostop settings that stop the pod seconds after its heartbeat stops, through the provider's API at
    `api_url` (a loopback stand-in): busy while `Heartbeat` beats, so the test looks around first."""
    return {api_variable: api_url, "AUTOSTOP_IDLE_MINUTES": "0.05", "AUTOSTOP_WARN_SECONDS": "1",
            "AUTOSTOP_GRACE_SECONDS": "0", "AUTOSTOP_POLL_SECONDS": "0.5", "AUTOSTOP_STOP_TIMEOUT_SECONDS": "600",
            "AUTOSTOP_HEARTBEAT_FILE": str(pod.root / "heartbeat"),
            "AUTOSTOP_CPU_PERCENT": "0"}  # the test machine's own load is no user's activity


class Heartbeat:
    """Keeps the pod busy (AUTOSTOP_HEARTBEAT_FILE) while a test looks around, then lets it go idle."""

    def __init__(self, path: Path) -> None:
        self.path, self.beating = path, True
        path.touch()
        threading.Thread(target=self._beat, daemon=True).start()

    def _beat(self) -> None:
        while self.beating:
            self.path.touch()
            time.sleep(0.5)

    def stop(self) -> None:
        self.beating = False
