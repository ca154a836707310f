"""`make smoke`: the real image, booted once per platform the way that platform runs it, and used the way its users
do. The image is built once on a minimal Debian base made here (mmdebstrap, imported into podman); then each
platform fixture boots it with that platform's volume layout and injected variables, runs the connect command the
platform's console shows (taken from the container's own "ready:" lines where podvisor prints it), checks what
that platform's users rely on, and ends with `podman stop -t 30` and exit code 0:

- runpod:     /workspace as a mounted volume (root-owned, as a fresh network volume is), RUNPOD_POD_ID,
              RUNPOD_PUBLIC_IP, RUNPOD_TCP_PORT_22, PUBLIC_KEY and the shipped template's env -> the printed
              `ssh root@IP -p PORT` logs in, and the login user's `podvisor status --ready` over SSH passes;
- vast:       the account's keys in a mounted /root/.ssh/authorized_keys, OPEN_BUTTON_TOKEN, CONTAINER_ID,
              DATA_DIRECTORY on its own volume and the template's env -> root and the login user log in, Jupyter
              takes the open-button token, and the state dir and checkpoints live under DATA_DIRECTORY;
- kubernetes: deployment.yaml's env and what the kubelet injects, the manifest's probe commands run by exec
              inside the container with their timeoutSeconds while two busy loops hold its CPUs;
- docker:     the README's quick start (ports on free host ports, no --gpus here), plus the API, Jupyter, a
              checkpoint written over SSH reaching the backup folder, and the HEALTHCHECK command.

Prints, per platform, the time from container start to the console's connect command working.
Needs root, podman, runc and mmdebstrap (installed with apt when missing); see shared notes on containers here.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BASE = "localhost/podvisor-base:bookworm"
IMAGE = "localhost/podvisor:smoke"
CONF = "[containers]\ndefault_ulimits = []\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n"
JUPYTER_TOKEN, API_TOKEN, OPEN_BUTTON_TOKEN = "smoke-jupyter-token-0123", "smoke-api-token-0123", "smoke-open-0123"
SSH_OPTIONS = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5"]


def sh(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, text=True, **kw)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mirror() -> str:
    for line in Path("/etc/apt/sources.list.d/debian.sources").read_text().splitlines():
        if line.startswith("URIs:"):
            return line.split()[1]
    raise SystemExit("no Debian mirror found in /etc/apt/sources.list.d/debian.sources")


def ensure_tools() -> None:
    missing = [tool for tool in ("podman", "runc", "mmdebstrap") if not shutil.which(tool)]
    if missing:
        sh("apt-get", "install", "-y", "-qq", "podman", "runc", "mmdebstrap", stdout=subprocess.DEVNULL)


def ensure_base() -> float:
    if sh("podman", "image", "exists", BASE, check=False).returncode == 0:
        return 0.0
    started = time.monotonic()
    make = subprocess.Popen(["mmdebstrap", "--quiet", "--variant=minbase", "--mode=root", "bookworm", "-", mirror()],
                            stdout=subprocess.PIPE)
    sh("podman", "import", "-q", "-", BASE, stdin=make.stdout, stdout=subprocess.DEVNULL)
    if make.wait() != 0:
        raise SystemExit("mmdebstrap failed")
    return time.monotonic() - started


def build() -> float:
    started = time.monotonic()
    env = {**os.environ, "ENGINE": "podman", "IMAGE": IMAGE.split(":")[0], "BASE_IMAGE": BASE,
           "EXTRA_PIP": "torch==2.13.0", "HOST_CA": "/etc/ssl/certs/ca-certificates.crt"}
    if Path("/opt/wheels").is_dir():
        env["PODVISOR_WHEELS"] = "/opt/wheels"
    sh(str(ROOT / "scripts" / "build_image.sh"), env=env, cwd=ROOT)
    sh("podman", "tag", f"{IMAGE.split(':')[0]}:latest", IMAGE)
    return time.monotonic() - started


def tiny_model(path: Path) -> None:
    code = "import torch, sys; m = torch.jit.script(torch.nn.Linear(4, 2)); m.save(sys.argv[1])"
    sh(sys.executable, "-c", code, str(path))
    os.utime(path, (time.time() - 10, time.time() - 10))


@dataclass
class Boot:
    """One container of the image, booted as a platform boots it; what its user holds (a key, the ports)."""

    name: str
    work: Path
    key: Path
    public_key: str
    ports: dict[int, int] = field(default_factory=lambda: {22: free_port(), 8888: free_port(), 8000: free_port()})
    started: float = 0.0

    def run(self, env: dict[str, str], volumes: list[tuple[Path, str]]) -> None:
        sh("podman", "rm", "-f", self.name, check=False, capture_output=True)
        # podman runs HEALTHCHECKs from systemd timers, which this machine lacks: checks run by hand instead.
        argv = ["podman", "run", "-d", "--name", self.name, "--health-cmd", "none"]
        for outside, inside in volumes:
            argv += ["-v", f"{outside}:{inside}"]
        for inner, outer in self.ports.items():
            argv += ["-p", f"127.0.0.1:{outer}:{inner}"]
        for key, value in env.items():
            argv += ["-e", f"{key}={value}"]
        self.started = time.monotonic()
        sh(*argv, IMAGE, stdout=subprocess.DEVNULL)

    def logs(self) -> str:
        out = sh("podman", "logs", self.name, check=False, capture_output=True)
        return out.stdout + out.stderr

    def wait(self, what: str, check: Callable[[], object], timeout: float = 240) -> float:
        """Seconds from container start until `check()` is true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return time.monotonic() - self.started
            except (requests.RequestException, OSError, subprocess.SubprocessError, ValueError):
                pass
            time.sleep(0.25)
        raise SystemExit(f"[{self.name}] {what} not there after {timeout} s\n{self.logs()[-5000:]}")

    def ssh(self, command: str, user: str = "runner", port: int | None = None,
            host: str = "127.0.0.1") -> subprocess.CompletedProcess:
        return sh("ssh", *SSH_OPTIONS, "-i", str(self.key), "-p", str(port or self.ports[22]), f"{user}@{host}",
                  command, check=False, capture_output=True, timeout=30)

    def printed_ssh(self) -> list[str]:
        """The SSH command of the container's own "ready:" lines (the one a console shows), as argv."""
        found = re.search(r"podvisor:\s+sshd\s+(ssh \S+ -p \d+)", self.logs())
        if not found:
            raise ValueError("no ssh command printed yet")
        return shlex.split(found.group(1))

    def run_printed_ssh(self, command: str) -> subprocess.CompletedProcess:
        argv = self.printed_ssh()
        return sh(argv[0], *SSH_OPTIONS, "-i", str(self.key), *argv[1:], command, check=False, capture_output=True,
                  timeout=30)

    def exec(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return sh("podman", "exec", self.name, *argv, check=False, capture_output=True, timeout=timeout)

    def stop(self) -> tuple[float, int]:
        began = time.monotonic()
        sh("podman", "stop", "-t", "30", self.name, stdout=subprocess.DEVNULL)
        took = time.monotonic() - began
        code = int(sh("podman", "inspect", "--format", "{{.State.ExitCode}}", self.name,
                      capture_output=True).stdout)
        logs = self.logs()
        sh("podman", "rm", self.name, stdout=subprocess.DEVNULL)
        assert code == 0, f"[{self.name}] exit code {code}\n{logs[-3000:]}"
        assert took < 30, f"[{self.name}] stop took {took:.1f} s"
        for secret in (JUPYTER_TOKEN, API_TOKEN, OPEN_BUTTON_TOKEN):
            assert secret not in logs, f"[{self.name}] a token reached the container log"
        return took, code


def runpod(boot: Boot) -> dict[str, float]:
    template = json.loads((DEPLOY / "runpod" / "template.json").read_text())
    volume = boot.work / "runpod-volume"
    volume.mkdir()
    env = {**template["env"], "RUNPOD_POD_ID": "smokepod0runpod", "RUNPOD_PUBLIC_IP": "127.0.0.1",
           "RUNPOD_TCP_PORT_22": str(boot.ports[22]), "PUBLIC_KEY": boot.public_key,
           "RUNPOD_API_KEY": "rpa_smoke_not_a_real_key_0123", "RUNPOD_GPU_COUNT": "0"}
    boot.run(env, [(volume, template["mounts"]["persistent"]["path"])])
    command = boot.wait("the Connect dialog's ssh root@", lambda: boot.run_printed_ssh("whoami").stdout.strip()
                        == "root")
    assert boot.printed_ssh()[1] == "root@127.0.0.1", boot.printed_ssh()
    ready = boot.wait("`podvisor status --ready` as the login user over SSH",
                      lambda: boot.ssh("podvisor status --ready").returncode == 0)
    status = boot.ssh("podvisor status")
    assert re.search(r"sshd\s+RUNNING .* ready", status.stdout), status.stdout + status.stderr
    # No INFERENCE_API_TOKEN here: the API listens on loopback only, and no proxy URL is announced for it.
    api = json.loads(boot.ssh("podvisor status --json").stdout)["services"]["inference"]["endpoint"]
    assert api == "http://127.0.0.1:8000/ (inside the pod only: set INFERENCE_API_TOKEN to publish it)", api
    assert (volume / ".podvisor").is_dir(), "the state dir is not on the volume"
    # The login user reads no control secret in any process it can see, and cannot change what root sources.
    leaked = boot.ssh("grep -l rpa_smoke_not_a_real_key /proc/[0-9]*/environ 2>/dev/null | wc -l").stdout.strip()
    assert leaked == "0", f"RUNPOD_API_KEY readable by the login user in {leaked} process(es)"
    owned = boot.ssh("stat -c '%U %a' /etc/podvisor/session.env").stdout.strip()
    assert owned == "root 640", owned
    return {"connect": command, "ready over ssh": ready}


def vast(boot: Boot) -> dict[str, float]:
    flags = shlex.split(json.loads((DEPLOY / "vast" / "template.json").read_text())["env"])
    env = dict(value.split("=", 1) for flag, value in zip(flags[::2], flags[1::2]) if flag == "-e")
    keys, data = boot.work / "vast-keys", boot.work / "vast-data"
    keys.mkdir()
    data.mkdir()
    (keys / "authorized_keys").write_text(boot.public_key + "\n")
    env.update({"CONTAINER_ID": "9123456", "VAST_CONTAINERLABEL": "C.9123456", "PUBLIC_IPADDR": "127.0.0.1",
                "VAST_TCP_PORT_22": str(boot.ports[22]), "VAST_TCP_PORT_8888": str(boot.ports[8888]),
                "OPEN_BUTTON_TOKEN": OPEN_BUTTON_TOKEN, "CONTAINER_API_KEY": "vast_smoke_not_a_real_key",
                "DATA_DIRECTORY": "/data"})
    boot.run(env, [(keys / "authorized_keys", "/root/.ssh/authorized_keys:ro"), (data, "/data")])
    command = boot.wait("Vast's ssh root@", lambda: boot.run_printed_ssh("whoami").stdout.strip() == "root")
    assert boot.ssh("whoami").stdout.strip() == "runner", "the login user cannot log in with the account's key"
    jupyter = boot.wait("Jupyter with the open-button token", lambda: requests.get(
        f"http://127.0.0.1:{boot.ports[8888]}/api/status", params={"token": OPEN_BUTTON_TOKEN}, timeout=3).ok)
    assert requests.get(f"http://127.0.0.1:{boot.ports[8888]}/api/status", timeout=3).status_code == 403
    assert (data / ".podvisor").is_dir() and (data / "checkpoints").is_dir(), "DATA_DIRECTORY did not move the paths"
    return {"connect": command, "jupyter": jupyter}


def kubernetes(boot: Boot) -> dict[str, float]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "deployment.yaml").read_text()) if d]
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env.update({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "POD_IP": "127.0.0.1",
                "HOSTNAME": "podvisor-7d9f8b6c5-x2x9z", "PUBLIC_KEY": boot.public_key})
    volume = boot.work / "pvc"
    volume.mkdir()
    boot.run(env, [(volume, "/workspace")])
    for n in range(2):  # two CPU-bound loops in the container, as a busy training pod has
        sh("podman", "exec", "-d", boot.name, "sh", "-c", f"echo $$ > /tmp/busy-{n}; while :; do :; done")
    try:
        probes = {k: v for k, v in container.items() if k.endswith("Probe")}
        startup = probes["startupProbe"]

        def probe(spec: dict) -> bool:
            return boot.exec(*spec["exec"]["command"], timeout=spec.get("timeoutSeconds", 1)).returncode == 0

        started = boot.wait("the startup probe", lambda: probe(startup),
                            startup["periodSeconds"] * startup["failureThreshold"])
        ready = boot.wait("the readiness probe", lambda: probe(probes["readinessProbe"]), 120)
        for name in ("livenessProbe", "readinessProbe"):
            for attempt in range(probes[name].get("failureThreshold", 3)):
                assert probe(probes[name]), f"{name} failed (attempt {attempt + 1}) on a busy pod"
        # The printed command is for inside the cluster (POD_IP, container port 22); from here, through the
        # published port, as `kubectl port-forward` would.
        connect = boot.wait("ssh runner@POD_IP", lambda: boot.ssh("whoami", user=_printed_user(boot)).stdout.strip()
                            == "runner")
        assert boot.printed_ssh()[1:] == ["runner@127.0.0.1", "-p", "22"], boot.printed_ssh()
    finally:
        boot.exec("sh", "-c", "kill $(cat /tmp/busy-*)")
    return {"startup probe": started, "readiness probe": ready, "connect": connect}


def _printed_user(boot: Boot) -> str:
    return boot.printed_ssh()[1].split("@")[0]


def docker(boot: Boot) -> dict[str, float]:
    """The README's quick start: `docker run -d --name pod -p 2222:22 -p 8888:8888 -p 8000:8000 -v
    "$PWD/workspace:/workspace" -e PUBLIC_KEY=... -e INFERENCE_API_TOKEN=... -e
    UPLOAD_DESTINATIONS=file:///workspace/backup -e AUTOSTOP_ACTION=exit IMAGE` (host ports free ones here)."""
    workspace = boot.work / "workspace"
    (workspace / "models").mkdir(parents=True)
    tiny_model(workspace / "models" / "model_step_1.pt")
    env = {"PUBLIC_KEY": boot.public_key, "INFERENCE_API_TOKEN": API_TOKEN,
           "UPLOAD_DESTINATIONS": "file:///workspace/backup", "AUTOSTOP_ACTION": "exit",
           "JUPYTER_TOKEN": JUPYTER_TOKEN, "UPLOAD_SETTLE_SECONDS": "1", "SMOKE_MARKER": "seen-over-ssh"}
    boot.run(env, [(workspace, "/workspace")])
    times = {"connect": boot.wait("ssh -p PORT runner@localhost", lambda: boot.ssh(
        "echo $SMOKE_MARKER", host="localhost").stdout.strip() == "seen-over-ssh")}
    times["jupyter"] = boot.wait("jupyter", lambda: requests.get(
        f"http://127.0.0.1:{boot.ports[8888]}/api/status", timeout=3,
        headers={"Authorization": f"token {JUPYTER_TOKEN}"}).ok)
    times["inference"] = boot.wait("inference", lambda: requests.get(
        f"http://127.0.0.1:{boot.ports[8000]}/readyz", timeout=3, headers={"Authorization": f"Bearer {API_TOKEN}"}).ok)
    assert requests.get(f"http://127.0.0.1:{boot.ports[8888]}/api/status", timeout=3).status_code == 403
    infer = requests.post(f"http://127.0.0.1:{boot.ports[8000]}/infer", headers={"Authorization": f"Bearer {API_TOKEN}"},
                          json={"inputs": {"x": [[1.0, 2.0, 3.0, 4.0]]}}, timeout=10)
    assert infer.status_code == 200, infer.text
    times["ready: lines"] = boot.wait("the ready: lines in the container log", lambda: "ready:" in boot.logs(), 60)
    writer = ("import os; d='/workspace/checkpoints'; os.makedirs(d, exist_ok=True); "
              "open(d+'/.step_7.tmp','wb').write(os.urandom(1<<20)); os.replace(d+'/.step_7.tmp', d+'/step_7.pt')")
    boot.ssh(f'python3 -c "{writer}"')
    written = time.monotonic()
    source, backup = workspace / "checkpoints" / "step_7.pt", workspace / "backup" / "step_7.pt"
    boot.wait("the checkpoint in the backup folder", lambda: backup.exists() and hashlib.sha256(
        backup.read_bytes()).digest() == hashlib.sha256(source.read_bytes()).digest(), 60)
    times["checkpoint durable"] = time.monotonic() - written
    health = boot.exec("podvisor", "status", "--ready")
    assert health.returncode == 0, f"the image's HEALTHCHECK command fails:\n{health.stdout}{health.stderr}"
    return times


PLATFORMS: dict[str, Callable[[Boot], dict[str, float]]] = {
    "runpod": runpod, "vast": vast, "kubernetes": kubernetes, "docker": docker}


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("the smoke test needs root (podman, ports, volumes)")
    chosen = sys.argv[1:] or list(PLATFORMS)
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="podvisor-smoke-"))
    work.chmod(0o755)
    (work / "containers.conf").write_text(CONF)
    os.environ["CONTAINERS_CONF"] = str(work / "containers.conf")
    base_s = ensure_base()
    build_s = build()
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "id"))
    public_key = (work / "id.pub").read_text().strip()
    results = {}
    for name in chosen:
        boot = Boot(f"podvisor-smoke-{name}", work, work / "id", public_key)
        try:
            times = PLATFORMS[name](boot)
        except BaseException:
            print(boot.logs()[-5000:], file=sys.stderr)
            sh("podman", "rm", "-f", boot.name, check=False, capture_output=True)
            raise
        times["stop -t 30"], _ = boot.stop()
        results[name] = times
        print(f"  {name}: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()), flush=True)
    print("\nSmoke matrix: the podvisor image on a minimal Debian base (podman), each platform as it runs it")
    print(f"  base made in {base_s:.1f} s (0 = cached), image built in {build_s:.1f} s")
    print(f"  {'platform':<11} {'container start -> connect command works':>42}   then")
    for name, times in results.items():
        rest = ", ".join(f"{k} {v:.2f} s" for k, v in times.items() if k != "connect")
        print(f"  {name:<11} {times['connect']:>40.2f} s   {rest}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
