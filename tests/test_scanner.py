"""The checkpoint scanner on a real folder that changes under it: a trainer pruning old checkpoints
(save_total_limit) deletes whole trees while the uploader lists them."""
from __future__ import annotations

import shutil
import threading

from services.uploader.scanner import Rules, unit_files


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
