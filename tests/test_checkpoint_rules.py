"""What makes a checkpoint whole, on real folders and a real SQLite queue: the frameworks' own last files, a
snapshot that outlives the trainer's deletions, a commit that waits for every file's latest version, the step
status calls "last durable", and a queue that many processes open at once."""
from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from services.uploader.frameworks import waiting_for
from services.uploader.queue import Item, Queue
from services.uploader.snapshot import Changed, Vanished, held_bytes, release, source_of, take
from services.uploader.units import Rules, unit_files
from services.uploader.settings import DEFAULT_EXCLUDE, DEFAULT_INCLUDE


def _write(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x" * 10)


def test_an_hf_trainer_checkpoint_waits_for_trainer_state_json(tmp_path):
    _write(tmp_path, "model.safetensors", "config.json", "training_args.bin")
    assert "trainer_state.json" in waiting_for(tmp_path)
    _write(tmp_path, "optimizer.pt", "scheduler.pt", "rng_state.pth")
    assert "trainer_state.json" in waiting_for(tmp_path)
    _write(tmp_path, "trainer_state.json")
    assert waiting_for(tmp_path) is None


def test_a_dcp_checkpoint_waits_for_its_metadata_and_ships_it(tmp_path):
    unit = tmp_path / "step_30"
    _write(unit, "__0_0.distcp", "__1_0.distcp")
    assert ".metadata" in waiting_for(unit)
    _write(unit, ".metadata")
    assert waiting_for(unit) is None
    # The default rules exclude hidden names; a framework's own last file is taken all the same.
    taken = unit_files(tmp_path, "step_30", Rules(DEFAULT_INCLUDE, DEFAULT_EXCLUDE))
    assert sorted(Path(p).name for p in taken) == [".metadata", "__0_0.distcp", "__1_0.distcp"]


def test_a_sharded_model_waits_for_its_index_and_every_listed_shard(tmp_path):
    _write(tmp_path, "model-00001-of-00002.safetensors")
    assert "model.safetensors.index.json" in waiting_for(tmp_path)
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                            "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert "model-00002-of-00002.safetensors" in waiting_for(tmp_path)
    _write(tmp_path, "model-00002-of-00002.safetensors")
    assert waiting_for(tmp_path) is None
    (tmp_path / "model.safetensors.index.json").write_text('{"weight_map": {"a": ')  # being written
    assert "readable" in waiting_for(tmp_path)


def test_plain_files_and_single_file_checkpoints_wait_for_nothing(tmp_path):
    _write(tmp_path / "step_10", "model.pt", "notes.txt")
    _write(tmp_path, "step_20.pt")
    assert waiting_for(tmp_path / "step_10") is None
    assert waiting_for(tmp_path / "step_20.pt") is None


def test_a_snapshot_keeps_the_files_the_trainer_deletes_and_is_released(tmp_path):
    root, base = tmp_path / "ckpt", tmp_path / "state" / "staging"
    _write(root / "checkpoint-1", "a.bin", "sub/b.bin")
    files = unit_files(root, "checkpoint-1", Rules(["*"], []))
    folder = take(base, root, "checkpoint-1", files)
    assert folder is not None
    for path in files:
        os.unlink(path)  # the trainer prunes the checkpoint
    staged = {p: source_of(str(folder), str(root), p) for p in files}
    assert all(Path(s).read_bytes() == b"x" * 10 for s in staged.values())
    assert held_bytes([base]) == 20, "the staged files are now the only copies"
    assert release([base], {str(folder)}) == []
    assert release([base], set()) == [folder] and not base.exists()


def test_a_snapshot_of_a_deleted_checkpoint_is_lost_and_of_a_replaced_file_changed(tmp_path):
    root, base = tmp_path / "ckpt", tmp_path / "staging"
    _write(root / "checkpoint-1", "a.bin", "b.bin")
    files = unit_files(root, "checkpoint-1", Rules(["*"], []))
    (root / "checkpoint-1" / "b.bin").write_bytes(b"new and longer")
    with pytest.raises(Changed):
        take(base, root, "checkpoint-1", files)
    for name in ("a.bin", "b.bin"):
        (root / "checkpoint-1" / name).unlink()
    (root / "checkpoint-1").rmdir()
    with pytest.raises(Vanished):
        take(base, root, "checkpoint-1", files)
    assert not base.exists() or not any(base.iterdir()), "a failed snapshot left files behind"


def _item(unit: str, name: str, sha: str, dest: str = "d") -> Item:
    return Item(dest, "/r", unit, f"{unit}/{name}", f"/r/{unit}/{name}", 1, 1, sha)


def test_a_checkpoint_whose_file_was_dropped_waits_for_that_files_next_version(tmp_path):
    queue = Queue(tmp_path / "q.sqlite3")
    queue.enqueue([_item("checkpoint-1", "a.bin", "a1"), _item("checkpoint-1", "b.bin", "b1")])
    a, b = sorted(queue.rows(), key=lambda r: r.remote)
    queue.mark([a.id], "durable")
    queue.mark([b.id], "superseded")  # b changed before it was shipped
    assert queue.to_commit("d", "_podvisor") == [], "a marker would have listed a only"
    queue.enqueue([_item("checkpoint-1", "b.bin", "b2")])
    new_b = [r for r in queue.rows() if r.sha256 == "b2"][0]
    queue.mark([new_b.id], "durable")
    [(root, unit, rows)] = queue.to_commit("d", "_podvisor")
    assert sorted((r.remote, r.sha256) for r in rows) == [("checkpoint-1/a.bin", "a1"), ("checkpoint-1/b.bin", "b2")]
    assert queue.lose("d", "/r", "checkpoint-1") == 2 and queue.to_commit("d", "_podvisor") == []


def test_last_durable_is_the_highest_committed_step(tmp_path):
    queue = Queue(tmp_path / "q.sqlite3")
    queue.commit("d", "/r", "checkpoint-300", 1, 1)
    queue.commit("d", "/r", "checkpoint-100", 1, 1)  # committed later (a slow one), but older
    assert queue.last_committed()["d"]["unit"] == "checkpoint-300"


def test_a_queue_written_by_an_older_podvisor_gains_the_snapshot_column(tmp_path):
    import sqlite3

    from services.uploader.queue import SCHEMA

    path = tmp_path / "q.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA.replace("    staging     TEXT NOT NULL DEFAULT '',\n", ""))
        db.execute("INSERT INTO uploads (dest, root, unit, remote, local, size, mtime_ns, sha256, enqueued_at) "
                   "VALUES ('d', '/r', 'u', 'u/a', '/r/u/a', 1, 1, 's', 0)")
    [row] = Queue(path).rows()
    assert row.staging == "" and row.source == "/r/u/a"


def _open_queue(path: str, barrier) -> str:
    barrier.wait()
    try:
        Queue(Path(path)).pending()
        return ""
    except Exception as exc:  # the failure this test exists for: "database is locked"
        return f"{type(exc).__name__}: {exc}"


def test_many_processes_open_a_fresh_queue_at_once(tmp_path):
    ctx = multiprocessing.get_context("fork")
    with ctx.Manager() as manager, ctx.Pool(8) as pool:
        for round_ in range(15):
            barrier = manager.Barrier(8)
            path = str(tmp_path / f"q{round_}.sqlite3")
            errors = [e for e in pool.starmap(_open_queue, [(path, barrier)] * 8) if e]
            assert not errors, errors
