"""The HTTP API: /healthz, /readyz, /model, /infer, /metrics, /reload; Bearer auth on all but /healthz."""
from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic_core import from_json
from pydantic_core import to_json as json_bytes

from services.inference.batching import Batcher
from services.inference.model import Loaded, ModelHolder, last_line
from services.inference.settings import InferenceSettings

log = logging.getLogger("inference")
INPUT_DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
HEARTBEAT_EVERY_SECONDS = 1.0


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("inference_requests_total", "Requests by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.errors = Counter("inference_model_errors_total", "Model calls that raised", registry=self.registry)
        self.latency = Histogram("inference_latency_seconds", "Time in /infer, parse to response",
                                 registry=self.registry,
                                 buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5))
        self.batch = Histogram("inference_batch_size", "Rows per model call", registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.load = Histogram("inference_model_load_seconds", "Model load and warm-up time", registry=self.registry,
                              buckets=(.1, .5, 1, 2, 5, 10, 30, 60, 120))


def parse_inputs(body: Any, model_dtype: str) -> tuple[dict[str, Any], int, tuple]:
    """Named inputs as nested lists (or {"data", "dtype", "shape"}) -> tensors; ValueError names the problem."""
    import torch

    if not isinstance(body, dict) or not isinstance(body.get("inputs"), dict) or not body["inputs"]:
        raise ValueError('expected a JSON object {"inputs": {"<name>": [[...]], ...}}')
    default_dtype = body.get("dtype", "float32")
    tensors, rows, signature = {}, None, []
    for name, spec in body["inputs"].items():
        data, dtype, shape = (spec.get("data"), spec.get("dtype", default_dtype), spec.get("shape")) \
            if isinstance(spec, dict) else (spec, default_dtype, None)
        if dtype not in INPUT_DTYPES:
            raise ValueError(f"input {name!r}: dtype {dtype!r} is not supported; expected one of "
                             f"{', '.join(INPUT_DTYPES)}")
        try:
            tensor = torch.tensor(data, dtype=getattr(torch, dtype))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"input {name!r}: not a rectangular nested list of numbers ({exc})") from None
        if shape is not None and (not isinstance(shape, list) or
                                  not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise ValueError(f"input {name!r}: shape {json_bytes(shape).decode()[:40]} is not a list of sizes; "
                             "expected e.g. [2, 16]")
        if shape is not None and list(tensor.shape) != shape:
            raise ValueError(f"input {name!r}: data has shape {list(tensor.shape)} but shape says {shape}")
        if tensor.dim() == 0:
            raise ValueError(f"input {name!r}: a scalar; expected a batch (first dimension = rows)")
        if tensor.shape[0] == 0:
            raise ValueError(f"input {name!r}: no rows; expected a batch of at least one")
        if rows is not None and tensor.shape[0] != rows:
            raise ValueError(f"input {name!r}: {tensor.shape[0]} rows, other inputs have {rows}")
        rows = tensor.shape[0]
        if model_dtype and tensor.is_floating_point():
            tensor = tensor.to(getattr(torch, model_dtype))
        tensors[name] = tensor
        signature.append((name, str(tensor.dtype), tuple(tensor.shape[1:])))
    return tensors, rows or 0, tuple(signature)


def to_json(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().float().tolist() if value.dtype == torch.bfloat16 else value.detach().cpu().tolist()
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def _freeze_heap() -> None:
    """Once a model is loaded, move everything alive (torch, FastAPI, the model: ~200k objects) out of the
    garbage collector's sight. Otherwise each full collection walks them all, 0.3-0.5 s under load, and a
    request that lands then waits that long for nothing: none of them is garbage."""
    gc.collect()
    gc.freeze()


def create_app(settings: InferenceSettings, token: str | None, heartbeat: Path | None = None) -> FastAPI:
    """`token`: required on every endpoint but /healthz, and on /reload even with INFERENCE_ALLOW_UNAUTHENTICATED
    (it makes the API read files and spend the GPU at any local user's word)."""
    api = Api(settings, token, heartbeat)
    # No /openapi.json or /docs: they answered without a token; the README documents the routes.
    app = FastAPI(title="podvisor inference", lifespan=api.lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    # A plain route, and the first one matched: FastAPI's dependency machinery cost a tenth of a millisecond
    # of each inference request; the bearer check is all it did here.
    app.router.add_route("/infer", api.infer, methods=["POST"])
    guarded = [Depends(api.authorized)]
    app.get("/healthz")(api.healthz)
    app.get("/readyz", dependencies=guarded)(api.readyz)
    app.get("/model", dependencies=guarded)(api.model)
    app.post("/reload", dependencies=[Depends(api.bearer)])(api.reload)
    app.get("/metrics", dependencies=guarded)(api.prometheus)
    return app


class Api:
    """The API's state (the model holder, the batcher, the metrics) and its routes."""

    def __init__(self, settings: InferenceSettings, token: str | None, heartbeat: Path | None) -> None:
        self.settings, self.heartbeat = settings, heartbeat
        self.metrics = Metrics()
        self.holder = ModelHolder(settings)
        self.holder.on_load = self._loaded
        self.stop = threading.Event()
        self.beat: dict[str, Any] = {"beat": 0.0}
        self.failures: set[tuple[str, str]] = set()
        self.expected = token.encode() if token else b""
        self.open_to_all = settings.inference_allow_unauthenticated and not settings.inference_api_token
        self.batcher = Batcher(self._run_model, settings.inference_max_batch, settings.inference_max_wait_ms,
                               self.metrics.batch.observe)

    def _loaded(self, model: Loaded) -> None:
        self.metrics.load.observe(model.load_seconds)
        _freeze_heap()

    def _run_model(self, batch: dict[str, Any]) -> Any:
        loaded: Loaded | None = self.holder.current
        if loaded is None:
            raise RuntimeError("no model loaded")
        return loaded.call({k: v.to(loaded.device) for k, v in batch.items()})

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        self.batcher.start()
        watcher = threading.Thread(target=self.holder.check_then_watch, args=(self.stop,), name="model-watch",
                                   daemon=True)
        watcher.start()
        yield
        self.stop.set()

    # Async on purpose: FastAPI runs a plain `def` dependency in its thread pool, a hop that cost a quarter
    # of each request's time; these only compare a header.
    async def bearer(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        if not self.expected or not (header.startswith("Bearer ") and
                                     secrets.compare_digest(header[7:].encode(), self.expected)):
            self.metrics.requests.labels(request.url.path, "401").inc()
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    async def authorized(self, request: Request) -> None:
        if not self.open_to_all:
            await self.bearer(request)

    async def infer(self, request: Request) -> Response:
        started = time.perf_counter()
        await self.authorized(request)
        batcher, metrics = self.batcher, self.metrics
        batcher.arriving += 1
        queued = False
        try:
            raw = await _read_body(request, int(self.settings.inference_max_body_mb * 2**20))
            if raw is None:
                limit_mb = self.settings.inference_max_body_mb
                return _invalid(metrics, f"request body over INFERENCE_MAX_BODY_MB ({limit_mb:g} MB)", 413)
            loaded = self.holder.current
            if loaded is None:
                metrics.requests.labels("/infer", "503").inc()
                return JSONResponse({"error": self.holder.reason}, status_code=503)
            try:
                inputs, rows, signature = parse_inputs(from_json(raw), self.settings.inference_dtype)
            except ValueError as exc:  # a malformed body included
                return _invalid(metrics, str(exc))
            batcher.arriving -= 1
            queued = True
            refused = loaded.refusals.get(signature)
            if refused:
                return _invalid(metrics, refused)
            try:
                outputs = await batcher.submit(inputs, signature, rows)
            except Exception as exc:
                refused = await batcher.on_model_thread(loaded.refusal, signature)
                if refused:
                    return _invalid(metrics, refused)
                return _model_failed(metrics, exc, self.failures)
            loaded.accepted.add(signature)
            latency = time.perf_counter() - started
            metrics.latency.observe(latency)
            metrics.requests.labels("/infer", "200").inc()
            _beat(self.heartbeat, self.beat)
            # pydantic-core's JSON both ways: a fifth of the stdlib's time for a 256-float body (~40 us a
            # request), and NaN/inf in outputs become null instead of invalid JSON.
            current = self.holder.current
            body = {"outputs": to_json(outputs), "latency_ms": round(latency * 1000, 3), "device": loaded.device,
                    "model_version": current.version if current else loaded.version}
            return Response(json_bytes(body, inf_nan_mode="null"), media_type="application/json")
        finally:
            if not queued:
                batcher.arriving -= 1

    async def healthz(self) -> dict:
        return {"ok": True}

    async def readyz(self) -> JSONResponse:
        loaded = self.holder.current
        if loaded is None:
            return JSONResponse({"ready": False, "reason": self.holder.reason}, status_code=503)
        return JSONResponse({"ready": True, "model": loaded.version, "last_reload_error": self.holder.last_error})

    async def model(self) -> dict:
        loaded = self.holder.current
        if loaded is None:
            raise HTTPException(503, self.holder.reason)
        return {"path": str(loaded.path), "format": loaded.format, "device": loaded.device,
                "version": loaded.version, "loaded_at": loaded.loaded_at, "load_seconds": loaded.load_seconds,
                "last_reload_error": self.holder.last_error}

    async def reload(self) -> dict:
        swapped = await asyncio.get_running_loop().run_in_executor(None, self.holder.check, True)
        loaded = self.holder.current
        return {"reloaded": swapped, "model": loaded.version if loaded else None, "error": self.holder.last_error}

    async def prometheus(self) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)


FAILURE_KINDS_KEPT = 256


def _model_failed(metrics: Metrics, exc: Exception, seen: set[tuple[str, str]]) -> JSONResponse:
    """A 500 for a well-formed request the model failed on: its traceback in the log once per kind of failure
    (a client repeating it does not flood the log), after that one line naming the request."""
    request_id = uuid.uuid4().hex[:12]
    kind = (type(exc).__name__, last_line(exc))
    if kind in seen:
        log.error("model failed on request %s: %s: %s (its traceback is logged above, once)", request_id, *kind)
    else:
        if len(seen) < FAILURE_KINDS_KEPT:
            seen.add(kind)
        log.error("model failed on request %s", request_id, exc_info=exc)
    metrics.errors.inc()
    metrics.requests.labels("/infer", "500").inc()
    return JSONResponse({"error": "the model raised an exception", "request_id": request_id}, status_code=500)


def _invalid(metrics: Metrics, problem: str, status: int = 422) -> JSONResponse:
    metrics.requests.labels("/infer", str(status)).inc()
    return JSONResponse({"error": problem}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it passes `limit` bytes: counted while it is read, chunked or not, so a client
    that sends more than it announced (or announces nothing) never makes the API hold more than the limit."""
    if int(request.headers.get("content-length") or 0) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _beat(path: Path | None, state: dict[str, Any]) -> None:
    """Tell the idle autostop the API is in use; only real inference counts (not health checks or scrapes,
    which would keep an idle pod alive forever)."""
    now = time.monotonic()
    if path is None or now - state["beat"] < HEARTBEAT_EVERY_SECONDS:
        return
    state["beat"] = now
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
