"""The commit marker: a small JSON file written at a destination after every file of a checkpoint is there
and verified. A checkpoint without one is incomplete by definition: restore, retention and status ignore it,
and restore verifies what it downloads against the sizes and sha256 listed here."""
from __future__ import annotations

import builtins
import json
import time
from dataclasses import asdict, dataclass, field

from entrypoint.steps import step_of

FORMAT = 1


@dataclass(frozen=True)
class MarkerFile:
    path: str
    """The file's path under the destination's root."""
    size: int
    sha256: str


@dataclass(frozen=True)
class Marker:
    unit: str
    prefix: str
    files: list[MarkerFile]
    run_id: str = ""
    committed_epoch: float = field(default_factory=time.time)

    @property
    def step(self) -> int | None:
        return step_of(self.unit)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_bytes(self) -> builtins.bytes:
        body = {"format": FORMAT, "step": self.step, "bytes": self.bytes, **asdict(self)}
        return json.dumps(body, indent=1).encode()

    @classmethod
    def from_bytes(cls, data: builtins.bytes) -> Marker:
        """ValueError when the marker is not one of ours or is damaged: then the checkpoint is not trusted."""
        try:
            body = json.loads(data)
            files = [MarkerFile(str(f["path"]), int(f["size"]), str(f["sha256"])) for f in body["files"]]
            marker = cls(str(body["unit"]), str(body.get("prefix", "")), files, str(body.get("run_id", "")),
                         float(body.get("committed_epoch", 0)))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"damaged commit marker ({type(exc).__name__})") from None
        if not files or any(not f.path.startswith(marker.prefix + marker.unit) for f in files):
            raise ValueError("commit marker lists no file of its checkpoint")
        return marker
