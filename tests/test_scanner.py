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
        seen = [unit_files(tmp_path, "checkpoint-100", Rules(["*"], [])) for _ in range(2000)]
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
