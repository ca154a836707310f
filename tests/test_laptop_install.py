"""`pip install podvisor` on a laptop, outside any checkout: the wheel carries the templates, pulls only what the
laptop side needs (requests, pydantic, keyring), and `podvisor cloud template push` and `cloud doctor` work
against the RunPod stand-in. The pod's runtime (supervisor, FastAPI, uvicorn, watchdog, NVML) is the `pod` extra,
which the image installs."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fakecloud import KEY, FakeRunPod

ROOT = Path(__file__).resolve().parent.parent
POD_ONLY = ("supervisor", "fastapi", "uvicorn", "watchdog", "pynvml", "psutil", "prometheus_client")


@pytest.fixture(scope="module")
def laptop_venv():
    """A wheel built from this tree, installed into a fresh venv in a temporary folder outside the repository."""
    folder = Path(tempfile.mkdtemp(prefix="laptop-"))
    try:
        wheels = folder / "wheels"
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(wheels), str(ROOT)], check=True, capture_output=True, timeout=600)
        python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or sys.executable
        subprocess.run([python, "-m", "venv", str(folder / "venv")], check=True, timeout=300)
        wheel = next(wheels.glob("podvisor-*.whl"))
        subprocess.run([str(folder / "venv" / "bin" / "pip"), "install", "-q", str(wheel)], check=True,
                       capture_output=True, timeout=900)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(folder: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    home = folder / "home"
    home.mkdir(exist_ok=True)
    base = {"PATH": f"{folder / 'venv' / 'bin'}:/usr/bin:/bin", "HOME": str(home), "XDG_CONFIG_HOME": str(home)}
    return subprocess.run([str(folder / "venv" / "bin" / "podvisor"), *argv], cwd=folder, capture_output=True,
                          text=True, timeout=120, env={**base, **(env or {})})


def test_the_wheel_pulls_only_what_the_laptop_needs_and_help_works(laptop_venv):
    python = laptop_venv / "venv" / "bin" / "python"
    present = subprocess.run([str(python), "-c", "import importlib.util as u; print(' '.join(m for m in "
                              f"{POD_ONLY!r} if u.find_spec(m)))"], capture_output=True, text=True, check=True)
    assert present.stdout.split() == [], f"the pod's packages came with a laptop install: {present.stdout}"
    shown = _run(laptop_venv, "--help")
    assert shown.returncode == 0 and "cloud" in shown.stdout, shown.stderr
    start = _run(laptop_venv, "start")
    assert start.returncode == 2 and "pip install 'podvisor[pod]'" in start.stderr, start.stderr
    assert "Traceback" not in start.stderr


def test_template_push_and_doctor_work_outside_the_checkout(laptop_venv):
    api = FakeRunPod()
    try:
        env = {**api.env, "SSH_AUTH_SOCK": ""}
        pushed = _run(laptop_venv, "cloud", "template", "push", "--provider", "runpod", env=env)
        assert pushed.returncode == 0, pushed.stderr
        assert "template 'podvisor' created" in pushed.stdout
        created = api.requests[-1]
        assert (created["method"], created["path"]) == ("POST", "/v2/templates") and api.refused == []
        doctor = _run(laptop_venv, "cloud", "doctor", "--provider", "runpod", env=env)
        assert "ok   runpod API: GET /v2/pods accepted it" in doctor.stdout, doctor.stdout + doctor.stderr
        assert "ok   template 'podvisor': the repo's image ghcr.io/podvisor/podvisor:0.1.0" in doctor.stdout
        assert KEY not in pushed.stdout + pushed.stderr + doctor.stdout + doctor.stderr
    finally:
        api.close()
