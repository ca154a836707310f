"""Finding and loading the model: the newest file by the run's step number then mtime, loaded as TorchScript,
a saved torch.export program, or through a user handler; a load that fails never replaces a working model."""
from __future__ import annotations

import fnmatch
import importlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

from services.inference.settings import InferenceSettings
from entrypoint.steps import step_of

log = logging.getLogger("inference")


Signature = tuple[tuple[str, str, tuple[int, ...]], ...]
"""A request's inputs as the model sees them: (name, dtype, shape after the batch dimension) each."""
REFUSALS_KEPT = 256
"""Input signatures remembered as refused, per model: enough for every client mistake, bounded for a fuzzer."""


def describe(signature: Signature) -> str:
    """`x float32 [*, 3]`: a signature in words, the batch dimension as *."""
    return ", ".join(f"{name} {dtype.removeprefix('torch.')} [{', '.join(['*', *map(str, shape)])}]"
                     for name, dtype, shape in signature)


def last_line(exc: BaseException) -> str:
    """The line that says what went wrong: TorchScript puts its own traceback first and the error last."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    return lines[-1].removeprefix("RuntimeError: ")[:300]


@dataclass(frozen=True)
class Loaded:
    """One loaded model: swapped in whole, so a request sees either the old one or the new one, and what it
    learned of its inputs goes with it."""

    path: Path
    mtime_ns: int
    format: str
    device: str
    call: Callable[[dict[str, Any]], Any]
    loaded_at: float
    load_seconds: float
    accepted: set[Signature] = field(default_factory=set, compare=False)
    """Signatures it has answered: a failure on one of these is the model's, not the input's."""
    refusals: dict[Signature, str] = field(default_factory=dict, compare=False)
    """Signatures it cannot take, and why: answered 422 at once, the model never asked again."""

    @property
    def version(self) -> str:
        return self.path.name

    def refusal(self, signature: Signature) -> str | None:
        """After the model raised on a batch of `signature`: whether it refuses any input of that signature
        (names, dtypes, ranks, sizes), asked once with a row of zeros. The model's signature is whatever it
        accepts (TorchScript keeps no shapes, a handler no types), so the model itself is the judge; the
        verdict is kept, and a refused signature never reaches the model again. None: the input was
        well-formed, and the failure is the model's (a 500)."""
        import torch

        if signature in self.accepted:
            return None
        example = {name: torch.zeros((1, *shape), dtype=getattr(torch, dtype.removeprefix("torch.")),
                                     device=self.device) for name, dtype, shape in signature}
        try:
            self.call(example)
        except Exception as exc:
            reason = f"the model does not take inputs {describe(signature)}: {last_line(exc)}"
            if len(self.refusals) < REFUSALS_KEPT:
                self.refusals[signature] = reason
                log.warning("inference: %s", reason)
            return reason
        self.accepted.add(signature)
        return None


def newest(settings: InferenceSettings) -> Path | None:
    if settings.inference_model_path:
        return settings.inference_model_path if settings.inference_model_path.exists() else None
    folder = settings.inference_model_dir
    if not folder.is_dir():
        return None
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
             and any(fnmatch.fnmatch(p.name, g) for g in settings.inference_model_glob)]
    if not files:
        return None
    return max(files, key=lambda p: (step_of(p.name) is not None, step_of(p.name) or 0, p.stat().st_mtime_ns))


def device_for(settings: InferenceSettings) -> str:
    import torch

    if settings.inference_device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return settings.inference_device


def load(path: Path, settings: InferenceSettings) -> Loaded:
    """Load, move to the device, cast, and warm up; raises on any failure."""
    import torch

    started = time.monotonic()
    device = device_for(settings)
    dtype = getattr(torch, settings.inference_dtype) if settings.inference_dtype else None
    example: dict[str, Any] = {}
    if settings.inference_handler:
        module_name, factory = settings.inference_handler.split(":")
        call = getattr(importlib.import_module(module_name), factory)(str(path), device)
        kind = "handler"
    elif path.suffix == ".pt2":
        program = torch.export.load(str(path))
        module = program.module().to(device)
        args, kwargs = program.example_inputs or ((), {})
        kwargs = dict(kwargs)
        names = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
        example = {**dict(zip(names, args, strict=False)), **kwargs}
        call, kind = _module_call(module, dtype, order=names), "torch.export"
    else:
        module = torch.jit.load(str(path), map_location=device).eval()
        call, kind = _module_call(module, dtype), "torchscript"
    shapes = settings.warmup_shapes()
    if shapes:
        example = {name: torch.zeros(shape) for name, shape in shapes.items()}
    if example:
        call({name: t.to(device) if dtype is None or not t.is_floating_point() else t.to(device, dtype)
              for name, t in example.items()})
    took = time.monotonic() - started
    return Loaded(path, path.stat().st_mtime_ns, kind, device, call, time.time(), took)


def _forward_names(module: Any) -> list[str]:
    """The names of forward's parameters: TorchScript keeps them in its schema."""
    import inspect

    schema = getattr(getattr(module, "forward", None), "schema", None)
    if schema is not None:
        return [arg.name for arg in schema.arguments[1:]]
    try:
        return list(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return []


def _module_call(module: Any, dtype: Any, order: list[str] | None = None) -> Callable[[dict[str, Any]], Any]:
    """Inputs are passed by name when the names match forward's, else in the order the request gives them
    (a Sequential's single parameter is called `input`; clients should not have to know that). An exported
    program takes its inputs positionally, in the order it was exported with (`order`)."""
    import torch

    if dtype is not None:
        module = module.to(dtype)
    names = set(_forward_names(module))

    def call(batch: dict[str, Any]) -> Any:
        with torch.inference_mode():
            if order is not None:
                return module(*([batch[n] for n in order] if set(batch) == set(order) else batch.values()))
            if set(batch) <= names:
                return module(**batch)
            return module(*batch.values())

    return call


class ModelHolder:
    """The model in service, and a reloader that swaps in a newer file only once it loads and warms up."""

    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings
        self.current: Loaded | None = None
        self.reason = "no model loaded yet"
        self.last_error: str | None = None
        self.failed: tuple[str, int] | None = None
        self.lock = threading.Lock()
        self.on_load: Callable[[Loaded], None] = lambda loaded: None

    def check(self, force: bool = False) -> bool:
        """Load the newest model when it is new (or `force`); returns True when a new model was swapped in."""
        with self.lock:
            try:
                import torch  # noqa: F401
            except ImportError:
                self.reason = "torch is not installed in this image; the API stays up without a model"
                return False
            path = newest(self.settings)
            if path is None:
                where = self.settings.inference_model_path or self.settings.inference_model_dir
                if self.current is None:
                    self.reason = f"no model file at {where} yet"
                return False
            stat = path.stat()
            key = (str(path), stat.st_mtime_ns)
            if not force and (self.failed == key or (self.current and (str(self.current.path),
                                                                         self.current.mtime_ns) == key)):
                return False
            if time.time() - stat.st_mtime < 1.0:
                return False  # still being written: look again at the next check
            try:
                loaded = load(path, self.settings)
            except Exception as exc:
                self.failed = key
                self.last_error = f"loading {path.name} failed: {type(exc).__name__}: {str(exc)[:300]}"
                log.exception("loading %s failed; %s", path, "the previous model keeps serving" if self.current
                              else "no model is served")
                if self.current is None:
                    self.reason = self.last_error
                return False
            self.current, self.failed, self.last_error = loaded, None, None
            log.info("serving %s (%s on %s), loaded in %.2f s", path.name, loaded.format, loaded.device,
                     loaded.load_seconds)
            self.on_load(loaded)
            return True

    def check_then_watch(self, stop: threading.Event) -> None:
        """Load the newest model now, then look for a newer one every INFERENCE_RELOAD_SECONDS until `stop`."""
        self.check()
        while not stop.wait(self.settings.inference_reload_seconds):
            self.check()
