"""Where the uploader keeps its state on the volume, and where a checkpoint and its commit marker live at a
destination. The one place that names them, so the uploader, restore, the CLI and the shipper agree."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from entrypoint.context import PodContext

SHIP_UNIT = "_podvisor"
"""podvisor's own files at a destination (run manifest, job log, commit markers); never a checkpoint."""
MARKER_DIR = f"{SHIP_UNIT}/checkpoints"
"""A checkpoint is committed at a destination once `MARKER_DIR/<unit>.json` exists there, written last."""
OWN_PREFIX = ".podvisor-"
"""podvisor's own folders inside a watch dir (snapshots, a restore being fetched): never a checkpoint."""
STAGING = f"{OWN_PREFIX}staging"
"""Inside a watch dir on another filesystem than the state dir: where its snapshots are kept (see staging_base)."""
RESTORE_STAGING = f"{OWN_PREFIX}restore"


def queue_path(ctx: PodContext) -> Path:
    return ctx.paths.service_dir("uploader") / "queue.sqlite3"


def status_path(ctx: PodContext) -> Path:
    return ctx.paths.service_dir("uploader") / "status.json"


def staging_base(ctx: PodContext, root: Path) -> Path:
    """Where the snapshots of watch dir `root` are kept: a queued checkpoint's files, hard-linked at queue time
    and kept until every destination has committed it. A link needs the same filesystem: the state dir when it
    is on the watch dir's (the checkpoints folder stays as the trainer left it), else a hidden folder in it."""
    state = ctx.paths.service_dir("uploader")
    state.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    if os.stat(state).st_dev != os.stat(root).st_dev:
        return root / STAGING
    tag = hashlib.sha256(str(root).encode()).hexdigest()[:8]
    return state / "staging" / f"{root.name}-{tag}"


def restore_state_path(ctx: PodContext) -> Path:
    """The last restore's outcome (restored, held, empty ...): status and the job read it."""
    return ctx.paths.service_dir("uploader") / "restore.json"


def restore_lock_path(ctx: PodContext) -> Path:
    return ctx.paths.service_dir("uploader") / "restore.lock"


def writer_lock_path(ctx: PodContext) -> Path:
    """Held by the running uploader: one writer per queue, even when a killed one is still dying."""
    return ctx.paths.service_dir("uploader") / "uploader.lock"


def root_prefix(roots: list[Path], root: Path) -> str:
    """A watch dir's folder at the destinations: its name when there are several, so two `checkpoint-1/`
    never collide; nothing with one watch dir."""
    return f"{root.name}/" if len(roots) > 1 else ""


def remote_name(roots: list[Path], root: Path, path: Path) -> str:
    """Where a local file goes under a destination's root."""
    return root_prefix(roots, root) + path.relative_to(root).as_posix()


def marker_name(prefix: str, unit: str) -> str:
    return f"{MARKER_DIR}/{prefix}{unit}.json"


def unit_of_marker(name: str) -> tuple[str, str] | None:
    """(prefix, unit) of a marker's path under the destination root, or None for anything else."""
    if not (name.startswith(f"{MARKER_DIR}/") and name.endswith(".json")):
        return None
    rest = name.removeprefix(f"{MARKER_DIR}/").removesuffix(".json")
    prefix, _, unit = rest.rpartition("/")
    return (f"{prefix}/" if prefix else ""), unit
