"""uploader: every fully written checkpoint, uploaded once per destination, verified, drained on stop.
It starts first and stops last, so it can drain what the job wrote last."""
from __future__ import annotations

import logging
import os
import time

from entrypoint import login_user
from entrypoint.context import PodContext
from entrypoint.registry import (AFTER_INTERACTIVE, HoldsStop, KeepsFiles, Program, Readiness, Restored, Restores,
                                 Service, python_module)
from services.uploader import cli
from services.uploader.layout import SHIP_UNIT, queue_path
from services.uploader.queue import Queue
from services.uploader.settings import UploadSettings
from services.uploader.ship import ship
from services.uploader.summary import summary

log = logging.getLogger("podvisor")


def _settings(ctx: PodContext) -> UploadSettings:
    return ctx.settings(UploadSettings)


def prepare(ctx: PodContext) -> None:
    """Only folders here: a restore can take long, so it runs in the uploader process, after sshd is up."""
    settings = _settings(ctx)
    for root in settings.upload_watch_dirs:
        login_user.own_dir(ctx, root)
    if not settings.upload_destinations:
        log.warning("uploader: UPLOAD_DESTINATIONS is empty: checkpoints are watched but not uploaded")


def _environment(ctx: PodContext) -> dict[str, str]:
    env = {}
    if _settings(ctx).hf_hub_enable_hf_transfer and "HF_XET_HIGH_PERFORMANCE" not in os.environ:
        env["HF_XET_HIGH_PERFORMANCE"] = "1"  # hf_transfer's successor in huggingface_hub 1.x
    return env


STATUS_FRESH_SECONDS = 10


def ready(ctx: PodContext) -> Readiness:
    """Ready once the uploader publishes its state (it does several times a second while it runs)."""
    info = summary(ctx)
    fresh = time.time() - float(info["uploads"].get("updated_epoch", 0)) < STATUS_FRESH_SECONDS
    return Readiness(fresh, info["summary"] if fresh else "the uploader has not reported yet")


def stop_blocker(ctx: PodContext) -> str | None:
    """The pod must not stop while a checkpoint is queued, in flight, uncommitted or still being written."""
    info = summary(ctx)
    if info["pending"] or info["uncommitted"] or info["unqueued"]:
        return (f"waiting for {info['pending']} upload(s), {info['uncommitted']} checkpoint(s) to commit, "
                f"{info['unqueued']} file(s) not queued yet")
    return None


def loss_on_stop(ctx: PodContext) -> str | None:
    """Checkpoints that no destination has committed, or files not queued at all: a stop would lose them."""
    info = summary(ctx)
    nowhere = Queue(queue_path(ctx)).committed_nowhere(SHIP_UNIT)
    if nowhere or info["unqueued"]:
        return f"{nowhere} checkpoint(s) held by no destination and {info['unqueued']} file(s) never queued"
    return None


def restore_checkpoint(ctx: PodContext) -> Restored:
    """For the job's first attempt: the newest committed checkpoint, unless one is here already."""
    from services.uploader.restore import restore

    if not _settings(ctx).upload_destinations:
        return Restored("empty", "no destination to restore from")
    outcome = restore(ctx)
    return Restored(outcome.state, outcome.detail)


SERVICE = Service(
    name="uploader",
    settings=UploadSettings,
    enabled=lambda ctx: _settings(ctx).upload_enabled,
    # Started once SSH, Jupyter and the API are up: on a pod of few cores its start (a second of CPU with the
    # autostop's) delayed theirs, and nothing of it is urgent at boot (what was queued stays queued).
    program=Program(command=python_module("services.uploader"), priority=5, stop_wait=None, environment=_environment,
                    after=(AFTER_INTERACTIVE,)),
    prepare=prepare,
    ready=ready,
    status=summary,
    cli=cli.register,
    capabilities=(HoldsStop(blocker=stop_blocker, loss=loss_on_stop), Restores(restore=restore_checkpoint),
                  KeepsFiles(keep=ship)),
)
