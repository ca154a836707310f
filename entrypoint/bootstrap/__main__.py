"""The bootstrap program supervisord runs once per boot (see entrypoint.bootstrap)."""
from __future__ import annotations

import logging
import sys

from entrypoint.bootstrap import run
from entrypoint.context import current

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per HTTP request of a dataset fetch is noise
    run(current())
