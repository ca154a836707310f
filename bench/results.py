"""Each benchmark's table, also kept as JSON under bench/results/, so runs on different days and machines
can be compared line by line."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

FOLDER = Path(__file__).resolve().parent / "results"


def save(name: str, rows: list[dict]) -> Path:
    """Write `rows` (one dict per table line: floor, value, ratio, goal ...) as bench/results/<name>-<UTC>.json."""
    FOLDER.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = FOLDER / f"{name}-{stamp}.json"
    path.write_text(json.dumps({"benchmark": name, "utc": stamp, "cpus": os.cpu_count(),
                                "machine": platform.node(), "rows": rows}, indent=1))
    print(f"(saved as {path.relative_to(FOLDER.parent.parent)})")
    return path
