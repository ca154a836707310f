"""The bootstrap program supervisord runs once per boot (see entrypoint.bootstrap)."""
from __future__ import annotations

import logging
import sys

from entrypoint.bootstrap import HookFailed, run
from entrypoint.context import current


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    ctx = current()
    try:
        run(ctx)
    except HookFailed as exc:
        from entrypoint.status import supervisor_proxy

        logging.getLogger("podvisor").error("boot stopped: %s", exc)
        ctx.exit_code_file.write_text(f"1\nboot stopped: {exc}\n")
        supervisor_proxy(ctx).supervisor.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
