"""`python -m bench [name ...]`: run the benchmarks (all by default) and print their tables."""
from __future__ import annotations

import importlib
import sys

BENCHMARKS = ["boot_bench", "uploader_bench", "inference_bench", "footprint_bench"]


def main() -> None:
    for name in sys.argv[1:] or BENCHMARKS:
        importlib.import_module(f"bench.{name}").main()


if __name__ == "__main__":
    main()
