"""Boot: `podvisor start` on this machine (no container) until a real SSH login works and until every service
answers, against the floors measured in the same run: sshd started alone with a ready host key, Jupyter Lab
started alone, and uvicorn serving a FastAPI app that imports torch, each until it answers.

The "all answering" floor is what the machine can do at best: the slowest of the three alone, or the CPU they
spend starting divided among the cores, whichever is longer. Goals (issue 27): SSH login <= 0.8 s after
`podvisor start`; every service answering within 1.3x of that floor.
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from bench.ports import free_port
from bench.results import save

REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
LIMIT_SECONDS = 90
VENV_BIN = Path(sys.executable).parent
API_ALONE = """
import torch, uvicorn
from fastapi import FastAPI
app = FastAPI()
@app.get("/healthz")
async def healthz():
    return {"ok": True}
uvicorn.run(app, host="127.0.0.1", port=int(__import__("sys").argv[1]), log_level="warning")
"""


def _ssh_ok(port: int, key: Path) -> bool:
    return subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=2",
                           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                           "-o", "LogLevel=ERROR", "-i", str(key), "-p", str(port), "root@127.0.0.1", "true"],
                          capture_output=True).returncode == 0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500  # a 401 or 403 answers too: the service is up
    except OSError:
        return False


def _until(predicate, started: float, interval: float = 0.02) -> float:
    while time.monotonic() - started < LIMIT_SECONDS:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    raise TimeoutError("did not answer in time")


def _cpu(proc: subprocess.Popen) -> float:
    """CPU seconds the process and its children have spent so far."""
    try:
        parent = psutil.Process(proc.pid)
        procs = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 15)
        proc.wait(60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, 9)
        proc.wait()


def _alone(argv: list[str], answered, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(seconds until it answers, CPU seconds it spent getting there) for one program started alone."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        took = _until(answered, started)
        return took, _cpu(proc)
    finally:
        _stop(proc)


def _sshd_alone(work: Path, key_pub: str, client: Path) -> tuple[float, float]:
    folder = work / "sshd-alone"
    (folder / "keys").mkdir(parents=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation folder, as podvisor makes it
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "host")], check=True)
    (folder / "keys" / "root").write_text(key_pub + "\n")
    port = free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host'}\nPidFile none\nUsePAM no\n"
        f"AuthorizedKeysFile {folder / 'keys'}/%u\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n")
    return _alone([shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(folder / "sshd_config")],
                  lambda: _ssh_ok(port, client))


def _jupyter_alone(work: Path) -> tuple[float, float]:
    port = free_port()
    root = work / "jupyter-alone"
    root.mkdir(exist_ok=True)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / "config"), "JUPYTER_DATA_DIR": str(root / "data"),
           "JUPYTER_RUNTIME_DIR": str(root / "runtime")}
    return _alone([str(VENV_BIN / "jupyter"), "lab", "--no-browser", "--allow-root", "--ip", "127.0.0.1",
                   "--port", str(port), f"--ServerApp.root_dir={root}", "--IdentityProvider.token=bench"],
                  lambda: _http_ok(f"http://127.0.0.1:{port}/api"), env)


def _api_alone() -> tuple[float, float]:
    port = free_port()
    return _alone([sys.executable, "-c", API_ALONE, str(port)], lambda: _http_ok(f"http://127.0.0.1:{port}/healthz"))


def _podvisor(work: Path, key_pub: str, run: int) -> tuple[float, float]:
    """(seconds to the first SSH login, seconds until every service answers) after `podvisor start`."""
    ports = {name: free_port() for name in ("ssh", "jupyter", "api")}
    state = work / f"state-{run}"
    env = {"PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": os.environ.get("HOME", "/root"),
           "PODVISOR_STATE_DIR": str(state), "PODVISOR_PROVIDER": "local", "PODVISOR_BIND_HOST": "127.0.0.1",
           "PODVISOR_WORKSPACE": str(work / "workspace"), "SSH_PORT": str(ports["ssh"]), "SSH_USER": "root",
           "AUTHORIZED_KEYS": key_pub, "JUPYTER_PORT": str(ports["jupyter"]),
           "JUPYTER_ROOT_DIR": str(work / "workspace"), "INFERENCE_PORT": str(ports["api"]),
           "INFERENCE_MODEL_DIR": str(work / "workspace" / "models"), "AUTOSTOP_ACTION": "none",
           "UPLOAD_WATCH_DIRS": str(work / "workspace" / "checkpoints"),
           "UPLOAD_DESTINATIONS": f"file://{work / 'uploads'}", "REPO_DIR": str(work / "workspace" / "repo")}
    started = time.monotonic()
    proc = subprocess.Popen([str(VENV_BIN / "podvisor"), "start"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        ssh = _until(lambda: _ssh_ok(ports["ssh"], work / "client"), started)
        _until(lambda: _http_ok(f"http://127.0.0.1:{ports['jupyter']}/api"), started)
        everything = _until(lambda: _http_ok(f"http://127.0.0.1:{ports['api']}/healthz"), started)
        return ssh, everything
    finally:
        _stop(proc)


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("the boot benchmark logs in as root over SSH, as RunPod's and Vast's consoles do: run it as root")
    base = Path("/var/lib/podvisor-bench")
    base.mkdir(mode=0o755, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="boot-", dir=base))
    work.chmod(0o755)  # sshd reads the keys as the login user and refuses a group- or world-writable path
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "client")], check=True)
        key_pub = (work / "client.pub").read_text().strip()
        floors: dict[str, list[tuple[float, float]]] = {"sshd": [], "jupyter": [], "api": []}
        ours: list[tuple[float, float]] = []
        for run in range(REPEATS):
            print(f"  boot, run {run + 1}: measuring ...", flush=True)
            floors["sshd"].append(_sshd_alone(work / f"alone-{run}", key_pub, work / "client"))
            floors["jupyter"].append(_jupyter_alone(work / f"alone-{run}"))
            floors["api"].append(_api_alone())
            ours.append(_podvisor(work, key_pub, run))
        _report(floors, ours)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _report(floors: dict[str, list[tuple[float, float]]], ours: list[tuple[float, float]]) -> None:
    median = {name: (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
              for name, runs in floors.items()}
    cpus = os.cpu_count() or 1
    all_floor = max(max(wall for wall, _ in median.values()), sum(cpu for _, cpu in median.values()) / cpus)
    ssh, everything = statistics.median(s for s, _ in ours), statistics.median(e for _, e in ours)
    rows = [
        {"step": "SSH login", "floor_s": median["sshd"][0], "value_s": ssh, "goal": "<= 0.8 s after start"},
        {"step": "every service answering", "floor_s": all_floor, "value_s": everything,
         "goal": "<= 1.3x the floor"},
    ]
    print(f"\nBoot, median of {REPEATS} (no container): floor = the services started alone "
          f"(sshd {median['sshd'][0]:.2f} s, Jupyter {median['jupyter'][0]:.2f} s, uvicorn+torch "
          f"{median['api'][0]:.2f} s; their start CPU {sum(c for _, c in median.values()):.2f} s over {cpus} cores)")
    print(f"{'step':>24} | {'floor s':>8} | {'podvisor s':>10} | {'ratio':>6} | goal")
    print("-" * 72)
    for row in rows:
        row["ratio"] = row["value_s"] / row["floor_s"]
        print(f"{row['step']:>24} | {row['floor_s']:>8.2f} | {row['value_s']:>10.2f} | {row['ratio']:>5.2f}x |"
              f" {row['goal']}")
    print("ratio = podvisor time / floor time (lower is better)")
    save("boot", rows)


if __name__ == "__main__":
    main()
