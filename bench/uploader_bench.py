"""Checkpoint upload to a local S3 server (rclone serve s3): podvisor's time from a checkpoint appearing
complete to its commit marker being written (every file durable and verified), against a raw
`rclone copy --transfers 8` of the same folder, measured in the same run, alternately (each goes first in
every other run, after a sync, so neither pays for the other's write-back).

Goals (issue 27): >= 0.95x raw for every shape, fixed cost <= 0.3 s per checkpoint. The last case is the
first one as a trainer writes it, file by file in the watch dir, timed from its last file's close. podvisor's
time includes the settle wait (UPLOAD_SETTLE_SECONDS, here 0.2 s), the sha256 of every file (the marker's
identity), the queue, the transfer and the marker.
"""
from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.results import save
from services.uploader.destinations.rclone import COMMON_FLAGS, _s3_remote_env, rclone_binary

WRITTEN = "written in place"
"""A case whose files a trainer writes one by one in the watch dir (the others appear whole, by a rename): the
clock starts at its last file's close, when a trainer's save returns."""
CASES = [("200 x 5 MB", 200, 5 << 20), ("2000 x 50 KB", 2000, 50 << 10), ("1 x 1 GB", 1, 1 << 30),
         (f"200 x 5 MB {WRITTEN}", 200, 5 << 20)]
GOALS = {"200 x 5 MB": 0.95, "2000 x 50 KB": 0.95, "1 x 1 GB": 0.95, f"200 x 5 MB {WRITTEN}": 0.95}
KEY, SECRET = "bench-key", "bench-secret-0123456789"
SETTLE = 0.2
CASE_LIMIT_SECONDS = 120
"""A case whose commit does not come in this long is reported and skipped, so `make bench` always ends."""
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
"""Each case is measured this many times, raw and through podvisor alternately; the table shows medians."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, timeout: float, interval: float = 0.005) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(interval)
    raise TimeoutError("benchmark step timed out")


def _make(folder: Path, files: int, size: int) -> None:
    folder.mkdir(parents=True)
    block = os.urandom(size)
    for i in range(files):  # distinct contents, cheaply: the first bytes differ
        (folder / f"shard-{i:05d}.bin").write_bytes(i.to_bytes(8, "little") + block[8:])


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="podvisor-bench-"))
    port = _free_port()
    bucket = work / "s3" / "bench"
    bucket.mkdir(parents=True)
    server = subprocess.Popen([rclone_binary(), "serve", "s3", "--auth-key", f"{KEY},{SECRET}", "--addr",
                               f"127.0.0.1:{port}", str(work / "s3")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_REGION": "us-east-1",
           "PODVISOR_STATE_DIR": str(work / "state"), "UPLOAD_WATCH_DIRS": str(work / "watch"),
           "UPLOAD_DESTINATIONS": "s3://bench/podvisor", "UPLOAD_SETTLE_SECONDS": str(SETTLE),
           "RESTORE_ON_START": "false", "PODVISOR_PROVIDER": "local"}
    raw_env = {**env, **_s3_remote_env(env)}
    uploader = None
    try:
        _wait(lambda: _listening(port), 20)
        (work / "watch").mkdir()
        uploader = subprocess.Popen([sys.executable, "-m", "services.uploader"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(lambda: (work / "state" / "services" / "uploader" / "status.json").exists(), 30)
        rows = []
        for label, files, size in CASES:
            raws, ours = [], []
            for attempt in range(REPEATS):
                source = work / "staging" / f"checkpoint-{len(rows)}{attempt}"
                _make(source, files, size)
                print(f"  {label}, run {attempt + 1}: measuring ...", flush=True)
                checkpoint = work / "watch" / source.name
                marker = bucket / "podvisor" / "_podvisor" / "checkpoints" / f"{source.name}.json"
                if label.endswith(WRITTEN):  # each written as a trainer writes it, timed from its last close
                    runs = [lambda: raws.append(_raw(_written(source, work / "raw-written"), raw_env)),
                            lambda: ours.append(_ours_written(source, checkpoint, marker))]
                else:
                    runs = [lambda: raws.append(_raw(source if source.exists() else checkpoint, raw_env)),
                            lambda: ours.append(_ours(source, checkpoint, marker))]
                try:
                    for run in runs if attempt % 2 == 0 else runs[::-1]:  # neither always goes first
                        os.sync()  # the previous run's written bytes do not land in this one's time
                        run()
                except TimeoutError:
                    print(f"  {label}, run {attempt + 1}: no commit within {CASE_LIMIT_SECONDS} s; case skipped",
                          flush=True)
                    break
                print(f"  {label}, run {attempt + 1}: raw rclone {raws[-1]:.2f} s, podvisor {ours[-1]:.2f} s",
                      flush=True)
                shutil.rmtree(work / "watch" / source.name)
                shutil.rmtree(bucket / "raw", ignore_errors=True)
                shutil.rmtree(bucket / "podvisor" / source.name, ignore_errors=True)
            if ours:
                rows.append((label, files * size, statistics.median(raws[:len(ours)]), statistics.median(ours)))
        _print(rows)
    finally:
        if uploader:
            uploader.terminate()
            uploader.wait(60)
        server.terminate()
        server.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def _raw(folder: Path, raw_env: dict[str, str]) -> float:
    """The floor: rclone's own copy of the folder, in seconds."""
    started = time.monotonic()
    subprocess.run([rclone_binary(), "copy", str(folder), f"podvisor_s3:bench/raw/{folder.name}",
                    "--transfers", "8", *COMMON_FLAGS], env=raw_env, check=True, capture_output=True)
    return time.monotonic() - started


def _ours(source: Path, checkpoint: Path, marker: Path) -> float:
    """podvisor: the folder appears complete in the watch dir at once (a rename); the clock stops when its
    commit marker is at the store."""
    os.rename(source, checkpoint)
    appeared = time.monotonic()
    return _wait(marker.exists, CASE_LIMIT_SECONDS) - appeared


def _written(source: Path, folder: Path) -> Path:
    """`source` written anew into `folder` as a trainer's save writes it: file after file, each closed when
    done; its bytes are still in the page cache, on their way to the disk, when the save returns."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for path in sorted(source.iterdir()):
        shutil.copyfile(path, folder / path.name)
    return folder


def _ours_written(source: Path, checkpoint: Path, marker: Path) -> float:
    """podvisor, as a trainer's save feeds it (`_written` into the watch dir); the clock runs from the last
    file's close to the commit marker."""
    _written(source, checkpoint)
    written = time.monotonic()
    return _wait(marker.exists, CASE_LIMIT_SECONDS) - written


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _print(rows: list[tuple[str, int, float, float]]) -> None:
    print(f"\nCheckpoint upload to a local S3 server, median of {REPEATS}: floor = raw `rclone copy --transfers 8`; "
          f"podvisor = checkpoint complete -> commit marker written (settle {SETTLE} s included)")
    print(f"{'checkpoint':>27} | {'floor s':>8} | {'floor MB/s':>10} | {'podvisor s':>10} | {'podvisor MB/s':>13} |"
          f" {'ratio':>6} | {'goal':>6} | {'fixed cost s':>12}")
    print("-" * 114)
    for label, size, raw, ours in rows:
        mb = size / 1e6
        print(f"{label:>27} | {raw:>8.2f} | {mb / raw:>10.1f} | {ours:>10.2f} | {mb / ours:>13.1f} |"
              f" {raw / ours:>5.2f}x | {GOALS[label]:>5.2f}x | {ours - raw:>+12.2f}")
    print("ratio = floor time / podvisor time (higher is better); fixed cost = podvisor - floor (goal <= +0.30 s)")
    save("uploads", [{"checkpoint": label, "bytes": size, "floor_s": raw, "value_s": ours, "ratio": raw / ours,
                      "goal_ratio": GOALS[label], "fixed_cost_s": ours - raw} for label, size, raw, ours in rows])


if __name__ == "__main__":
    main()
