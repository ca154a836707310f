"""Where the job keeps its record and writes its checkpoints: the runner writes them, the service's
declaration (status, prepare) reads them, and neither imports the other."""
from __future__ import annotations

from pathlib import Path

from entrypoint.context import PodContext
from services.job.settings import JobSettings
from services.uploader.settings import UploadSettings


def status_path(ctx: PodContext) -> Path:
    return ctx.paths.service_dir("job") / "status.json"


def checkpoint_dir(ctx: PodContext) -> Path:
    settings = ctx.settings(JobSettings)
    if settings.job_checkpoint_dir:
        return settings.job_checkpoint_dir
    uploader = ctx.optional_settings(UploadSettings)
    if uploader is not None:
        return uploader.upload_watch_dirs[0]
    return ctx.core.podvisor_workspace / "checkpoints"
