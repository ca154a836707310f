"""The bootstrap program supervisord runs once per boot (see entrypoint.bootstrap)."""
from __future__ import annotations

import logging

from entrypoint import logs
from entrypoint.bootstrap import run
from entrypoint.context import current

if __name__ == "__main__":
    ctx = current()
    logs.configure(ctx.core.podvisor_log_level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per HTTP request of a dataset fetch is noise
    run(ctx)
