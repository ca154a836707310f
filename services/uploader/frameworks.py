"""When a checkpoint folder is whole by its framework's own rule, not by quiet time alone. A trainer may pause
longer than UPLOAD_SETTLE_SECONDS in the middle of a checkpoint (a GPU->CPU copy of the optimizer state, a
gather across ranks); the last file each framework writes says it is done:

- the Hugging Face `Trainer`: `trainer_state.json`, written after the model, optimizer, scheduler and RNG state;
- `torch.distributed.checkpoint`: `.metadata`, written by the coordinator once every rank's `.distcp` is there;
- a sharded safetensors (or `.bin`) model: its `*.index.json`, written after the shards, and every shard it lists;
- Lightning and plain `torch.save`: nothing to wait for (a file written in one go, or written to a temporary
  name and renamed, appears whole).

UPLOAD_SENTINEL covers any other framework; UPLOAD_DETECT_FRAMEWORKS=false turns these rules off.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

HF_TRAINER_STATE = "trainer_state.json"
HF_TRAINER_FILES = re.compile(r"(training_args\.bin|optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state(_\d+)?\.pth)$")
"""Files only the Hugging Face Trainer writes into a checkpoint, all before trainer_state.json."""
DCP_METADATA = ".metadata"
DCP_SHARD = re.compile(r".*\.distcp$")
SHARD = re.compile(r"(?P<stem>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.(?P<ext>safetensors|bin)$")
INDEX = re.compile(r".+\.(safetensors|bin)\.index\.json$")


def waiting_for(folder: Path) -> str | None:
    """What the checkpoint folder still lacks by its framework's rule, in words; None when it is whole (or is no
    folder, or follows no rule known here)."""
    if not folder.is_dir():
        return None
    names: set[str] = set()
    for parent, _, files in os.walk(folder):
        rel = os.path.relpath(parent, folder)
        names.update(name if rel == "." else f"{rel}/{name}" for name in files)
    return _hf_trainer(names) or _dcp(names) or _sharded_model(folder, names)


def _hf_trainer(names: set[str]) -> str | None:
    if HF_TRAINER_STATE not in names and any(HF_TRAINER_FILES.match(n) for n in names):
        return f"{HF_TRAINER_STATE} (the Hugging Face Trainer's last file)"
    return None


def _dcp(names: set[str]) -> str | None:
    for name in names:
        if DCP_SHARD.match(name):
            expected = f"{os.path.dirname(name)}/{DCP_METADATA}".lstrip("/")
            if expected not in names:
                return f"{expected} (torch.distributed.checkpoint's last file)"
    return None


def _sharded_model(folder: Path, names: set[str]) -> str | None:
    for name in sorted(n for n in names if INDEX.match(n)):
        try:
            weight_map = json.loads((folder / name).read_text())["weight_map"]
            shards = {os.path.join(os.path.dirname(name), str(s)) for s in weight_map.values()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return f"{name} to be readable (a sharded model's index)"
        missing = sorted(shards - names)
        if missing:
            return f"{missing[0]} (listed in {name}; {len(missing)} shard(s) missing)"
    indexed = {n.removesuffix(".index.json") for n in names if INDEX.match(n)}
    for name in sorted(names):
        shard = SHARD.match(os.path.basename(name))
        if not shard:
            continue
        base = os.path.join(os.path.dirname(name), f"{shard['stem']}.{shard['ext']}")
        if base not in indexed:
            return f"{base}.index.json (a sharded model's index, written after its shards)"
    return None
