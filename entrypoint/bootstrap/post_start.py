"""Run once every service has settled (a supervised one-shot that the event listener starts, `Program.after`):
announce in the container log how to reach each service once they answer, then write the run manifest, then run
POST_START_SCRIPT. All of it happens off the boot path, so it never delays SSH or Jupyter."""
from __future__ import annotations

import logging
import time

from entrypoint import logs
from entrypoint.bootstrap import hook, manifest, repo, run_step, settings_of, wait_done
from entrypoint.context import PodContext, current
from entrypoint.registry import keep_files
from entrypoint.status import collect, waiting
from entrypoint.timings import record

log = logging.getLogger("podvisor")
READY_WAIT_SECONDS = 300
"""How long to wait for every service to answer before announcing what does."""


def announce(ctx: PodContext) -> None:
    """The lines a user looks for in RunPod's log pane or `docker logs`: that the pod is ready, the SSH command
    with the host keys, the Jupyter and API addresses (where to read the token, never the token)."""
    deadline = time.monotonic() + READY_WAIT_SECONDS
    report = collect(ctx)
    while waiting(report) and time.monotonic() < deadline:
        time.sleep(0.5)
        report = collect(ctx)
    if ctx.paths.stop_requested_file.exists():
        return  # the pod is stopping already: nothing to connect to
    services = {name: svc for name, svc in report["services"].items() if svc["state"] != "DISABLED"}
    answering = [name for name, svc in services.items() if svc.get("ready")]
    started_ms = ctx.paths.boot().get("started_epoch_ms", 0)
    elapsed_ms = time.time() * 1000 - started_ms
    down = [f"{name} ({svc['state']}{': ' + svc['ready_detail'] if svc.get('ready_detail') else ''})"
            for name, svc in services.items() if name not in answering]
    if down:
        log.warning("ready, except %s, %.1f s after start", ", ".join(down), elapsed_ms / 1000)
    else:
        log.info("ready: all %d services answer, %.1f s after start", len(services), elapsed_ms / 1000)
    record(ctx.paths.timings_file, ctx.run_id, "services_ready", "ok" if not down else "partial", elapsed_ms)
    for name, svc in services.items():
        if svc.get("endpoint"):
            note = f"  ({svc['summary']})" if svc.get("summary") else ""
            log.info("  %-10s %s%s", name, svc["endpoint"], note)


def main() -> None:
    ctx = current()
    logs.configure(ctx.core.podvisor_log_level, "podvisor: %(message)s")
    settings = settings_of(ctx)
    commit = repo.commit(settings.repo_dir) if settings else None
    path = ctx.paths.manifest_file
    run_step(ctx, "announce", lambda: announce(ctx))
    # After the announce, which waits for every service to answer: the manifest imports torch and runs pip
    # freeze, 1.3 s of CPU that, on a pod of 2 cores, Jupyter and the API starting beside it were waiting for.
    run_step(ctx, "manifest", lambda: manifest.update(path, manifest.collect(ctx, commit)))
    run_step(ctx, "ship_manifest", lambda: keep_files(ctx, [path]))
    if settings and settings.post_start_script:
        wait_done(ctx, "post_start")
        run_step(ctx, "post_start", lambda: hook(ctx, settings.post_start_script, "post_start"))


if __name__ == "__main__":
    main()
