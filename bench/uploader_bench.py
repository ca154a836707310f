"""Checkpoint upload to a local S3 server (rclone serve s3): podvisor's time from file close to durable, and its
throughput, against a raw `rclone copyto` of the same file with the same flags, measured in the same run.

Goals (issue 3): throughput >= 0.9x raw rclone; close->durable <= raw transfer time + 1 s.
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

from services.uploader.destinations.rclone import COMMON_FLAGS, rclone_binary
from services.uploader.queue import Queue

SIZES_MB = [64, 256, 1024]
KEY, SECRET = "bench-key", "bench-secret-0123456789"
SETTLE = 0.2
REPEATS = 3
"""Each size is measured this many times, raw and through podvisor alternately; the table shows medians."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, timeout: float, interval: float = 0.01) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(interval)
    raise TimeoutError("benchmark step timed out")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="podvisor-bench-"))
    port = _free_port()
    (work / "s3" / "bench").mkdir(parents=True)
    server = subprocess.Popen([rclone_binary(), "serve", "s3", "--auth-key", f"{KEY},{SECRET}", "--addr",
                               f"127.0.0.1:{port}", str(work / "s3")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_REGION": "us-east-1",
           "PODVISOR_STATE_DIR": str(work / "state"), "UPLOAD_WATCH_DIRS": str(work / "watch"),
           "UPLOAD_DESTINATIONS": "s3://bench/podvisor", "UPLOAD_SETTLE_SECONDS": str(SETTLE),
           "RESTORE_ON_START": "false", "PODVISOR_PROVIDER": "local"}
    from services.uploader.destinations.rclone import _s3_remote_env

    raw_env = {**env, **_s3_remote_env(env)}
    uploader = None
    try:
        _wait(lambda: _listening(port), 20)
        (work / "watch").mkdir()
        uploader = subprocess.Popen([sys.executable, "-m", "services.uploader"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        queue_file = work / "state" / "services" / "uploader" / "queue.sqlite3"
        _wait(lambda: (work / "state" / "services" / "uploader" / "status.json").exists(), 30)
        rows = []
        for size in SIZES_MB:
            source = work / f"source-{size}.bin"
            with source.open("wb") as fh:
                for _ in range(size):
                    fh.write(os.urandom(1 << 20))
            raws, ours = [], []
            for attempt in range(REPEATS):
                started = time.monotonic()
                subprocess.run([rclone_binary(), "copyto", str(source), f"podvisor_s3:bench/raw/{attempt}-{source.name}",
                                *COMMON_FLAGS], env=raw_env, check=True, capture_output=True)
                raws.append(time.monotonic() - started)
                name = f"step_{size}_{attempt}.bin"
                shutil.copyfile(source, work / "watch" / name)  # written, then closed: the clock starts
                closed = time.monotonic()
                ours.append(_wait(lambda: _is_durable(queue_file, name), 300) - closed)
            source.unlink()
            rows.append((size, statistics.median(raws), statistics.median(ours)))
        _print(rows)
    finally:
        if uploader:
            uploader.terminate()
            uploader.wait(30)
        server.terminate()
        server.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _is_durable(queue_file: Path, name: str) -> bool:
    if not queue_file.exists():
        return False
    return any(r.remote == name and r.status == "durable" for r in Queue(queue_file).rows())


def _print(rows: list[tuple[int, float, float]]) -> None:
    print(f"\nCheckpoint upload to a local S3 server, median of {REPEATS} (settle {SETTLE} s; close->durable "
          "includes settle, hashing, upload and verification)")
    print(f"{'size MB':>8} | {'raw rclone s':>12} | {'raw MB/s':>9} | {'podvisor s':>10} | {'podvisor MB/s':>13} |"
          f" {'throughput ratio':>16} | {'overhead s':>10}")
    print("-" * 98)
    for size, raw, ours in rows:
        print(f"{size:>8} | {raw:>12.2f} | {size / raw:>9.1f} | {ours:>10.2f} | {size / ours:>13.1f} |"
              f" {raw / ours:>15.2f}x | {ours - raw:>+10.2f}")
    print("goals: throughput ratio >= 0.90x; overhead <= +1.00 s")


if __name__ == "__main__":
    main()
