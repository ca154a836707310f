"""The run manifest, $PODVISOR_STATE_DIR/manifest.json: what this run ran on and with, so a checkpoint can be
traced to its code and environment. It records the NAMES of the variables set, never their values."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from entrypoint.context import PodContext
from entrypoint.files import write_atomically
from entrypoint.gpu import inventory
from entrypoint.catalog import sections
from entrypoint.schema import env_names

TORCH_PROBE = ("import json, torch; print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, "
               "'cuda_available': torch.cuda.is_available()}))")


def update(path: Path, changes: dict[str, Any]) -> None:
    """Merge `changes` into the manifest (the job adds its outcome to what the boot wrote)."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        manifest = {}
    manifest.update(changes)
    write_atomically(path, json.dumps(manifest, indent=2, default=str))


def collect(ctx: PodContext, repo_commit: str | None) -> dict[str, Any]:
    python = shutil.which("python3") or sys.executable  # the job's Python, which may not be podvisor's
    torch_info = _json_of([python, "-c", TORCH_PROBE]) or {"torch": None}
    gpus, summary = inventory()
    freeze = subprocess.run([python, "-m", "pip", "freeze"], capture_output=True, text=True, timeout=120)
    known = {name for _, cls in sections() for f, info in cls.model_fields.items() for name in env_names(f, info)}
    return {
        "run_id": ctx.run_id,
        "written_epoch": time.time(),
        "provider": ctx.cloud.provider,
        "instance_id": ctx.cloud.instance_id,
        "python": platform.python_version(),
        **torch_info,
        "driver": gpus[0]["driver"] if gpus else None,
        "gpus": gpus or summary,
        "repo_commit": repo_commit,
        "pip_freeze": freeze.stdout.splitlines() if freeze.returncode == 0 else [],
        "variables_set": sorted(name for name in os.environ if name in known),
    }


def _json_of(argv: list[str]) -> dict[str, Any] | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        return json.loads(out.stdout) if out.returncode == 0 else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
