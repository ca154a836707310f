"""The checkpoint scanner on a real folder that changes under it: a trainer pruning old checkpoints
(save_total_limit) deletes whole trees while the uploader lists them; the uploader's own reads."""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from services.uploader.scanner import Scanner
from services.uploader.units import Rules, unit_files


def test_a_checkpoint_deleted_while_it_is_listed_is_not_an_error(tmp_path):
    unit = tmp_path / "checkpoint-100"
    stop = threading.Event()

    def prune_and_rewrite() -> None:
        while not stop.is_set():
            for i in range(20):
                shard = unit / f"shard-{i}" / "deep"
                shard.mkdir(parents=True, exist_ok=True)
                (shard / "weights.bin").write_bytes(b"x")
            shutil.rmtree(unit, ignore_errors=True)

    pruner = threading.Thread(target=prune_and_rewrite, daemon=True)
    pruner.start()
    try:
        seen: list[dict] = []
        while len(seen) < 2000 or not any(seen):  # on a loaded machine the pruner may need longer to write some
            seen.append(unit_files(tmp_path, "checkpoint-100", Rules(["*"], [])))
            assert len(seen) < 200_000, "the pruner never wrote a file"
    finally:
        stop.set()
        pruner.join(10)
    assert all(path.startswith(str(unit)) for snapshot in seen for path in snapshot)
    assert any(seen), "the listing saw the files between deletions"


def _complete(scanner: Scanner, timeout: float = 10.0) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = scanner.poll()
        if found:
            return found
        time.sleep(min(0.05, scanner.next_due()))
    raise AssertionError("the checkpoint never settled")


def test_reading_a_checkpoint_is_not_a_change_to_it(tmp_path):
    """The uploader hashes and sends every file it finds: those reads must not send the scanner over the
    checkpoint again (with thousands of files, that was a core's worth of stat calls during each upload)."""
    scanner = Scanner([tmp_path], Rules(["*"], []), settle=0.2, rescan=3600, polling=False)
    scanner.start()
    try:
        unit = tmp_path / "checkpoint-7"
        unit.mkdir()
        for i in range(5):
            (unit / f"shard-{i}.bin").write_bytes(b"w" * 1000)
        [(root, name, snapshot)] = _complete(scanner)
        assert (root, name, len(snapshot)) == (tmp_path, "checkpoint-7", 5)
        for path in snapshot:
            Path(path).read_bytes()
        time.sleep(0.5)
        assert scanner.dirty == {}, "reads were taken for changes"
        (unit / "shard-0.bin").write_bytes(b"v" * 1000)  # a real change still counts
        wait_until = time.monotonic() + 5
        while not scanner.dirty and time.monotonic() < wait_until:
            time.sleep(0.02)
        assert list(scanner.dirty) == [(tmp_path, "checkpoint-7")]
    finally:
        scanner.stop()


def test_the_include_and_exclude_rules_pick_a_checkpoints_files(tmp_path):
    """UPLOAD_EXCLUDE's defaults drop temp files, hidden names and whatever is below an excluded folder;
    UPLOAD_INCLUDE picks by file name; a link to a file counts as that file, a dangling one does not."""
    import os

    unit = tmp_path / "checkpoint-7"
    for folder in ("", "shard", ".git", "__pycache__", "deep/er"):
        (unit / folder).mkdir(parents=True, exist_ok=True)
        for name in ("model.safetensors", "opt.pt", "w.tmp", ".lock", "x.partial", "notes~", "odd[1].pt"):
            (unit / folder / name).write_bytes(b"x" * 3)
    os.symlink(unit / "opt.pt", unit / "linked.pt")
    os.symlink(unit / "gone.pt", unit / "dangling.pt")
    (tmp_path / "step_9.pt").write_bytes(b"yy")
    exclude = ["*.tmp", "*.partial", "*.part", "*~", ".*", "*.swp", "*.lock", "__pycache__"]
    kept = {os.path.relpath(p, unit) for p in unit_files(tmp_path, "checkpoint-7", Rules(["*"], exclude))}
    assert kept == {f"{folder}{name}" for folder in ("", "shard/", "deep/er/")
                    for name in ("model.safetensors", "opt.pt", "odd[1].pt")} | {"linked.pt"}
    only_pt = unit_files(tmp_path, "checkpoint-7", Rules(["*.pt"], exclude))
    assert {os.path.basename(p) for p in only_pt} == {"opt.pt", "odd[1].pt", "linked.pt"}
    assert unit_files(tmp_path, "step_9.pt", Rules(["*"], exclude)) == {
        str(tmp_path / "step_9.pt"): (2, (tmp_path / "step_9.pt").stat().st_mtime_ns)}
    assert unit_files(tmp_path, ".hidden-unit", Rules(["*"], exclude)) == {}
    assert unit_files(tmp_path, "checkpoint-7", Rules([], exclude)) == {}, "nothing included, nothing taken"


def test_a_checkpoint_deleted_before_it_was_queued_is_reported_vanished(tmp_path):
    """Seen being written and then deleted (or handed back by the uploader because it went while it was kept):
    the uploader reports it lost locally; a checkpoint never seen is nothing to report."""
    scanner = Scanner([tmp_path], Rules(["*"], []), settle=60, rescan=3600, polling=False)
    scanner.start()
    try:
        unit = tmp_path / "checkpoint-3"
        unit.mkdir()
        (unit / "model.pt").write_bytes(b"w" * 100)
        deadline = time.monotonic() + 10
        while not scanner.settling() and time.monotonic() < deadline:
            scanner.poll()
            time.sleep(0.05)
        assert scanner.settling() == 1
        shutil.rmtree(unit)
        deadline = time.monotonic() + 10
        while not scanner.vanished and time.monotonic() < deadline:
            scanner.poll()
            time.sleep(0.05)
        assert scanner.take_vanished() == [(tmp_path, "checkpoint-3", 1)]

        snapshot = {str(tmp_path / "checkpoint-4" / "a.bin"): (1, 1)}
        scanner.again(tmp_path, "checkpoint-4", snapshot)  # its folder is already gone
        scanner.poll()
        assert scanner.take_vanished() == [(tmp_path, "checkpoint-4", 1)]
    finally:
        scanner.stop()


def test_each_file_is_hashed_when_written_and_the_hash_follows_a_rename_not_a_rewrite(tmp_path):
    """A file is hashed once it is closed after writing, before its checkpoint settles; the HF Trainer's rename
    of tmp-checkpoint-N keeps the hash (same inode, size and mtime), a rewrite in place or an excluded name does
    not get one."""
    import hashlib

    from services.uploader.hashes import Hashes

    hashes = Hashes(2)
    scanner = Scanner([tmp_path], Rules(["*.bin"], ["*.tmp"]), settle=60, rescan=3600, polling=False,
                      written=hashes.early)
    scanner.start()
    try:
        folder = tmp_path / "tmp-checkpoint-5"
        folder.mkdir()
        (folder / "model.bin").write_bytes(b"a" * 100_000)
        (folder / "notes.tmp").write_bytes(b"scratch")
        deadline = time.monotonic() + 10
        while len(hashes.done) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert list(hashes.done.values()) == [hashlib.sha256(b"a" * 100_000).hexdigest()], "hashed on close"
        folder.rename(tmp_path / "checkpoint-5")
        moved = tmp_path / "checkpoint-5" / "model.bin"
        time.sleep(0.3)  # the rename's events: nothing is read again for it
        assert len(hashes.done) == 1
        assert hashes.of(str(moved)) == (100_000, hashlib.sha256(b"a" * 100_000).hexdigest())
        assert hashes.done == {}, "a hash is used once"
    finally:
        scanner.stop()
        hashes.close()
    hashes = Hashes(1)
    try:
        path = tmp_path / "checkpoint-5" / "model.bin"
        hashes.early(str(path))
        hashes.of(str(path))  # taken: gone from the cache
        hashes.early(str(path))
        with path.open("r+b") as fh:  # rewritten in place, same size: the kept hash no longer matches
            fh.write(b"b" * 100_000)
        assert hashes.of(str(path)) == (100_000, hashlib.sha256(b"b" * 100_000).hexdigest())
    finally:
        hashes.close()
