"""The DATASETS step: each listed dataset version fetched into DATASETS_DIR/NAME/VERSION, verified, before the
job starts. A version already there (its manifest written last by the fetch) is not downloaded again; `@latest`
asks the Hub which version is newest and, when the Hub does not answer, takes the newest one already on the
volume rather than keep the job waiting. What was placed goes to datasets.json, the job's PODVISOR_DATASET_DIRS."""
from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING

from entrypoint.datasets import PLACED, DatasetError, DatasetRef, cached_versions, fetch, resolve
from entrypoint.files import write_atomically

if TYPE_CHECKING:
    from entrypoint.bootstrap.settings import BootstrapSettings
    from entrypoint.context import PodContext

log = logging.getLogger("podvisor")


def prefetch(ctx: PodContext, settings: BootstrapSettings) -> str:
    placed = []
    for uri in settings.datasets:
        ref = DatasetRef.parse(uri)
        root = settings.datasets_dir / ref.name
        try:
            version = resolve(ref)
        except Exception as exc:
            on_volume = cached_versions(root)
            if ref.version not in (None, "latest") or not on_volume:
                raise DatasetError(f"{ref}: {exc}") from exc
            version = on_volume[-1]
            log.warning("datasets: %s: the Hub did not say which version is newest (%s); using %s, already on the "
                        "volume", ref, exc, version)
        target = root / version
        if (target / PLACED).exists():
            log.info("datasets: %s@%s already on the volume (%s)", ref.name, version, target)
        else:
            log.info("datasets: %s@%s: fetching into %s", ref.name, version, target)
            started = time.monotonic()
            manifest = fetch(ref, target, version)
            log.info("datasets: %s@%s: %d file(s), %.1f MB in %.1f s, every checksum verified", ref.name, version,
                     len(manifest["files"]), manifest["total_bytes"] / 1e6, time.monotonic() - started)
        placed.append({"uri": uri, "name": ref.name, "version": version, "path": str(target)})
    write_atomically(ctx.paths.datasets_file, json.dumps(placed))
    return f"{len(placed)} dataset(s) in place: " + ", ".join(f"{d['name']}@{d['version']}" for d in placed)
