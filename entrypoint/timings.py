"""Boot phases as JSON lines in $PODVISOR_STATE_DIR/timings.jsonl, so slow boots can be measured, not guessed."""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator


def record(path: Path, run_id: str, phase: str, status: str, elapsed_ms: float, **extra: object) -> None:
    line = {"ts_epoch_ms": int(time.time() * 1000), "run_id": run_id, "phase": phase, "status": status,
            "elapsed_ms": round(elapsed_ms, 1), **extra}
    with path.open("a") as fh:
        fh.write(json.dumps(line) + "\n")


@contextmanager
def phase(path: Path, run_id: str, name: str) -> Iterator[None]:
    """Time one phase; it is recorded as "error" when it raises, and the exception goes on."""
    started = time.monotonic()
    try:
        yield
    except BaseException:
        record(path, run_id, name, "error", (time.monotonic() - started) * 1000)
        raise
    record(path, run_id, name, "ok", (time.monotonic() - started) * 1000)
