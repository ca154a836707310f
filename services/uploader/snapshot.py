"""A queued checkpoint is kept as it was when it was queued: its files are hard-linked into a staging folder on
the same filesystem (`layout.staging_base`; a reflink copy where links are refused, a plain copy only when the
disk has room), and the uploader ships the staged files. A trainer that deletes old checkpoints
(`save_total_limit`) or rewrites a folder by rename can then never shrink or change what is being shipped, and the
commit marker lists exactly what the snapshot held. A staged folder is freed once every destination has committed it.

What a hard link cannot stop is a rewrite in place of the same inode: the uploader sees the staged file's size
or mtime move, drops that version, and the scanner queues the new one.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import time
from pathlib import Path

from services.uploader.units import Snapshot

FICLONE = 0x40049409
"""ioctl(dest, FICLONE, src): a copy-on-write clone (btrfs, XFS, bcachefs); refused elsewhere."""
COPY_HEADROOM_BYTES = 1 << 30
"""A plain copy is made only if the disk keeps this much free after it: a snapshot never fills the disk."""


class Vanished(Exception):
    """The checkpoint is gone from the disk before it could be kept: lost locally, never committed."""


class Changed(Exception):
    """A file changed between the scan and the snapshot: the scanner sees it settle again."""


def take(base: Path, root: Path, unit: str, files: Snapshot) -> Path | None:
    """Keep `files` of checkpoint `unit` (of watch dir `root`) in a new folder under `base` and return it; None
    when the disk has room for no copy and the filesystem allows neither links nor clones (then the files are
    shipped from where they are, and a file that vanishes meanwhile makes the checkpoint lost, never
    half-committed)."""
    folder = base / f"{unit}@{time.time_ns()}"
    try:
        for path_text, version in files.items():
            source = Path(path_text)
            target = folder / source.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not _keep(source, target):
                shutil.rmtree(folder, ignore_errors=True)
                return None
            info = target.stat()
            if (info.st_size, info.st_mtime_ns) != version:
                raise Changed(f"{source} changed while it was kept")
    except FileNotFoundError:
        shutil.rmtree(folder, ignore_errors=True)
        if not (root / unit).exists():
            raise Vanished(f"{unit} was deleted before it could be kept") from None
        raise Changed(f"a file of {unit} was replaced while it was kept") from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _keep(source: Path, target: Path) -> bool:
    """A hard link; else a clone; else a copy if the disk has room. False when none of them can be made."""
    try:
        os.link(source, target)
        return True
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            raise
    size = source.stat().st_size
    with source.open("rb") as src, target.open("wb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
            shutil.copystat(source, target)
            return True
        except OSError:
            pass
        if shutil.disk_usage(target.parent).free < size + COPY_HEADROOM_BYTES:
            dst.close()
            target.unlink(missing_ok=True)
            return False
        shutil.copyfileobj(src, dst, 16 << 20)
    shutil.copystat(source, target)
    return True


def source_of(staging: str, root: str, local: str) -> str:
    """Where a queued file is read from: its staged copy, or the file itself when it was not staged."""
    return os.path.join(staging, os.path.relpath(local, root)) if staging else local


def release(bases: list[Path], in_use: set[str]) -> list[Path]:
    """Delete the snapshots no queued or uncommitted upload needs; returns what was freed."""
    freed = []
    for base in bases:
        if not base.is_dir():
            continue
        for folder in base.iterdir():
            if str(folder) not in in_use:
                shutil.rmtree(folder, ignore_errors=True)
                freed.append(folder)
        if not any(base.iterdir()):
            base.rmdir()
    return freed


def held_bytes(bases: list[Path]) -> int:
    """Disk the snapshots hold beyond the checkpoints themselves: staged files no other name points to (the
    trainer deleted or replaced the original, or the snapshot is a copy)."""
    total = 0
    for base in bases:
        for folder, _, names in os.walk(base):
            for name in names:
                try:
                    info = os.stat(os.path.join(folder, name))
                except FileNotFoundError:
                    continue
                if info.st_nlink == 1:
                    total += info.st_size
    return total
