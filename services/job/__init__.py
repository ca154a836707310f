"""job: the user's training command, with restarts that resume, and an optional stop of the pod when done."""
from __future__ import annotations

import json
import os
from typing import Any

from entrypoint import login_user
from entrypoint.context import PodContext
from entrypoint.registry import Activity, Program, Restart, Service, python_module
from services.job.cluster import ClusterError, detect
from services.job.layout import checkpoint_dir, status_path
from services.job.settings import JobSettings


def prepare(ctx: PodContext) -> None:
    """The job runs as the login user: its checkpoint folder must be its own to write in. A cluster whose
    variables contradict each other leaves the job down with the reason: a node that guessed would hang the
    others at the rendezvous."""
    detect(ctx.settings(JobSettings), os.environ)
    login_user.own_dir(ctx, checkpoint_dir(ctx))


def advise(settings: JobSettings) -> list[tuple[str, str]]:
    """`config --check` names a contradiction in the cluster's variables before any node starts."""
    if not settings.job_command:
        return []
    try:
        detect(settings, os.environ)
    except ClusterError as exc:
        return [(exc.variable, exc.message)]
    return []


def status(ctx: PodContext) -> dict[str, Any]:
    try:
        job = json.loads(status_path(ctx).read_text())
    except (OSError, ValueError):
        return {"summary": "not started"}
    parts = [job["state"], f"attempt {job['attempts']}"]
    cluster = job.get("cluster") or {}
    if cluster.get("nodes", 1) > 1:
        parts.append(f"node {cluster['rank']} of {cluster['nodes']} ({cluster['source']}, rendezvous "
                     f"{cluster['endpoint']})")
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
    advise=advise,
    prepare=prepare,
    status=status,
    capabilities=(Activity(while_running=True),),
)
