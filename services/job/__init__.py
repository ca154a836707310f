"""job: the user's training command, with restarts that resume, and an optional stop of the pod when done."""
from __future__ import annotations

import json
from typing import Any

from entrypoint import login_user
from entrypoint.context import PodContext
from entrypoint.registry import Activity, Program, Restart, Service, python_module
from services.job.layout import checkpoint_dir, status_path
from services.job.settings import JobSettings


def prepare(ctx: PodContext) -> None:
    """The job runs as the login user: its checkpoint folder must be its own to write in."""
    login_user.own_dir(ctx, checkpoint_dir(ctx))


def status(ctx: PodContext) -> dict[str, Any]:
    try:
        job = json.loads(status_path(ctx).read_text())
    except (OSError, ValueError):
        return {"summary": "not started"}
    parts = [job["state"], f"attempt {job['attempts']}"]
    if job.get("exit_code") is not None:
        parts.append(f"exit code {job['exit_code']}")
    if job.get("total_duration_s") is not None:
        parts.append(f"{job['total_duration_s']:.0f} s")
    return {"summary": ", ".join(parts), "job": job}


SERVICE = Service(
    name="job",
    settings=JobSettings,
    enabled=lambda ctx: bool(ctx.settings(JobSettings).job_command),
    # Its attempts are the runner's own (resumed from the newest checkpoint): supervisord never restarts it.
    program=Program(command=python_module("services.job"), priority=50, stop_wait=15,
                    restart=Restart(when="never", start_seconds=0),
                    credentials_of=("autostop",)),  # JOB_ON_EXIT=stop stops the pod as the autostop would
    prepare=prepare,
    status=status,
    capabilities=(Activity(while_running=True),),
)
