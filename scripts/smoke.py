"""`make smoke`: build the image on a minimal Debian base made here (mmdebstrap, imported into podman), run it
as a user would, and check SSH, Jupyter, the inference API and a checkpoint upload to a host-mounted volume,
then `stop -t 30`. Prints the time from container start to each service ready.

Needs root, podman, runc and mmdebstrap (installed with apt when missing); see shared notes on containers here.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
BASE = "localhost/podvisor-base:bookworm"
IMAGE = "localhost/podvisor:smoke"
NAME = "podvisor-smoke"
CONF = "[containers]\ndefault_ulimits = []\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n"
TOKEN, API_TOKEN = "smoke-jupyter-token-0123", "smoke-api-token-0123"


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
    code = ("import torch, sys; m = torch.jit.script(torch.nn.Linear(4, 2)); m.save(sys.argv[1])")
    sh(sys.executable, "-c", code, str(path))
    os.utime(path, (time.time() - 10, time.time() - 10))


def wait(what: str, check, started: float, timeout: float = 240) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return time.monotonic() - started
        except (requests.RequestException, OSError, subprocess.SubprocessError):
            pass
        time.sleep(0.25)
    logs = sh("podman", "logs", NAME, check=False, capture_output=True)
    raise SystemExit(f"{what} not ready after {timeout} s\n{logs.stdout[-4000:]}{logs.stderr[-4000:]}")


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("the smoke test needs root (podman, ports, volumes)")
    ensure_tools()
    conf = Path(tempfile.mkdtemp(prefix="podvisor-smoke-")) / "containers.conf"
    conf.write_text(CONF)
    os.environ["CONTAINERS_CONF"] = str(conf)
    base_s = ensure_base()
    build_s = build()
    work = conf.parent
    workspace, volume, keys = work / "workspace", work / "volume", work / "keys"
    for folder in (workspace / "models", volume, keys):
        folder.mkdir(parents=True)
    tiny_model(workspace / "models" / "model_step_1.pt")
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "id"))
    ports = {22: free_port(), 8888: free_port(), 8000: free_port()}
    sh("podman", "rm", "-f", NAME, check=False, capture_output=True)
    env = {"PUBLIC_KEY": (keys / "id.pub").read_text().strip(), "JUPYTER_TOKEN": TOKEN, "INFERENCE_API_TOKEN": API_TOKEN,
           "UPLOAD_DESTINATIONS": "file:///mnt/volume", "UPLOAD_SETTLE_SECONDS": "1", "AUTOSTOP_ACTION": "none",
           "SMOKE_MARKER": "seen-over-ssh"}
    # podman runs HEALTHCHECKs from systemd timers, which this machine lacks: the check runs by hand below.
    argv = ["podman", "run", "-d", "--name", NAME, "--health-cmd", "none", "-v", f"{workspace}:/workspace",
            "-v", f"{volume}:/mnt/volume"]
    for inner, outer in ports.items():
        argv += ["-p", f"127.0.0.1:{outer}:{inner}"]
    for key, value in env.items():
        argv += ["-e", f"{key}={value}"]
    started = time.monotonic()
    sh(*argv, IMAGE, stdout=subprocess.DEVNULL)
    ssh = ["ssh", "-i", str(keys / "id"), "-p", str(ports[22]), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
           "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "runner@127.0.0.1"]
    ready = {
        "ssh": wait("ssh", lambda: sh(*ssh, "echo $SMOKE_MARKER", capture_output=True, timeout=10).stdout.strip()
                    == "seen-over-ssh", started),
        "jupyter": wait("jupyter", lambda: requests.get(f"http://127.0.0.1:{ports[8888]}/api/status", timeout=3,
                                                        headers={"Authorization": f"token {TOKEN}"}).ok, started),
        "inference": wait("inference", lambda: requests.get(f"http://127.0.0.1:{ports[8000]}/readyz", timeout=3,
                                                            headers={"Authorization": f"Bearer {API_TOKEN}"}).ok,
                          started),
    }
    ready["all"] = max(ready.values())
    assert requests.get(f"http://127.0.0.1:{ports[8888]}/api/status", timeout=3).status_code == 403
    infer = requests.post(f"http://127.0.0.1:{ports[8000]}/infer", headers={"Authorization": f"Bearer {API_TOKEN}"},
                          json={"inputs": {"x": [[1.0, 2.0, 3.0, 4.0]]}}, timeout=10)
    assert infer.status_code == 200, infer.text
    writer = ("import os; d='/workspace/checkpoints'; os.makedirs(d, exist_ok=True); "
              "open(d+'/.step_7.tmp','wb').write(os.urandom(1<<20)); os.replace(d+'/.step_7.tmp', d+'/step_7.pt')")
    sh(*ssh, f'python3 -c "{writer}"', timeout=30)
    written = time.monotonic()
    source = workspace / "checkpoints" / "step_7.pt"
    durable = wait("upload", lambda: (volume / "step_7.pt").exists() and hashlib.sha256(
        (volume / "step_7.pt").read_bytes()).digest() == hashlib.sha256(source.read_bytes()).digest(), written, 60)
    status = json.loads(sh("podman", "exec", NAME, "podvisor", "status", "--json", capture_output=True).stdout)
    health = sh("podman", "exec", NAME, "podvisor", "status", "--ready", check=False, capture_output=True)
    assert health.returncode == 0, f"the image's HEALTHCHECK command fails:\n{health.stdout}"
    stopping = time.monotonic()
    sh("podman", "stop", "-t", "30", NAME, stdout=subprocess.DEVNULL)
    stop_s = time.monotonic() - stopping
    code = int(sh("podman", "inspect", "--format", "{{.State.ExitCode}}", NAME, capture_output=True).stdout)
    logs = sh("podman", "logs", NAME, capture_output=True).stdout
    sh("podman", "rm", NAME, stdout=subprocess.DEVNULL)
    assert code == 0, f"container exit code {code}\n{logs[-3000:]}"
    assert stop_s < 30, f"stop took {stop_s:.1f} s"
    assert (volume / "step_7.pt").exists()
    for secret in (TOKEN, API_TOKEN):
        assert secret not in logs, "a token reached the container log"
    print("\nSmoke test: podvisor image on a minimal Debian base (podman)")
    print(f"  base made in {base_s:.1f} s (0 = cached), image built in {build_s:.1f} s")
    for name, seconds in ready.items():
        print(f"  container start -> {name:<9} ready: {seconds:6.2f} s")
    print(f"  checkpoint written -> durable on the host volume: {durable:.2f} s")
    print(f"  podman stop -t 30: {stop_s:.2f} s, exit code {code}")
    print("  services: " + ", ".join(f"{n} {s['state']}" for n, s in status["services"].items()))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
