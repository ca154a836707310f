"""Run once every service has settled (the event listener starts it): write the run manifest, then run
POST_START_SCRIPT. Both happen off the boot path, so they never delay SSH or Jupyter."""
from __future__ import annotations

import logging
import sys

from entrypoint.bootstrap import hooks, manifest, repo, run_step, settings_of
from entrypoint.context import current
from services.uploader.ship import ship


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="podvisor: %(message)s", stream=sys.stdout)
    ctx = current()
    settings = settings_of(ctx)
    commit = repo.commit(settings.repo_dir) if settings else None
    path = ctx.state_dir / "manifest.json"
    run_step(ctx, "manifest", lambda: manifest.update(path, manifest.collect(ctx, commit)))
    run_step(ctx, "ship_manifest", lambda: ship(ctx, [path]))
    if settings and settings.post_start_script:
        run_step(ctx, "post_start", lambda: hooks.run_hook(settings.post_start_script, "post_start"))


if __name__ == "__main__":
    main()
