"""inference: FastAPI + uvicorn serving the newest model, hot-reloaded, dynamically batched, behind a token."""
from __future__ import annotations

import logging
from typing import Any

import requests

from entrypoint.context import PodContext
from entrypoint.probes import http_status, local_host
from entrypoint.registry import Readiness, Service, python_module
from services.inference.settings import InferenceSettings

log = logging.getLogger("podvisor")


def _settings(ctx: PodContext) -> InferenceSettings:
    return ctx.section("inference")  # type: ignore[return-value]


def bind_host(ctx: PodContext) -> str:
    """Without a token the API stays on loopback, unless the user explicitly allows an open API."""
    settings = _settings(ctx)
    if settings.inference_api_token or settings.inference_allow_unauthenticated:
        return ctx.core.podvisor_bind_host
    return "127.0.0.1"


def prepare(ctx: PodContext) -> None:
    settings = _settings(ctx)
    if not settings.inference_api_token and ctx.core.podvisor_bind_host not in ("127.0.0.1", "localhost"):
        if settings.inference_allow_unauthenticated:
            log.warning("!!! the inference API is open to the network WITHOUT a token "
                        "(INFERENCE_ALLOW_UNAUTHENTICATED=true) !!!")
        else:
            log.info("inference: no INFERENCE_API_TOKEN, so the API listens on 127.0.0.1 only")


def _url(ctx: PodContext, path: str) -> str:
    return f"http://{local_host(bind_host(ctx))}:{_settings(ctx).inference_port}{path}"


def ready(ctx: PodContext) -> Readiness:
    """The API answers. Whether a model is loaded is the API's own readiness (/readyz, shown by `status`): a
    fresh pod has no model yet, and its SSH and Jupyter must not be kept from traffic for that."""
    return http_status(_url(ctx, "/healthz"))


def status(ctx: PodContext) -> dict[str, Any]:
    settings = _settings(ctx)
    token = settings.inference_api_token.get_secret_value() if settings.inference_api_token else None
    try:
        answer = requests.get(_url(ctx, "/readyz"), headers={"Authorization": f"Bearer {token}"} if token else {},
                              timeout=2).json()
    except (requests.RequestException, ValueError) as exc:
        return {"model_ready": False, "summary": f"model: unknown, /readyz does not answer ({type(exc).__name__})"}
    if answer.get("ready"):
        return {"model_ready": True, "summary": f"model {answer.get('model')} loaded"}
    return {"model_ready": False, "summary": f"no model served yet: {answer.get('reason', answer)}"}


SERVICE = Service(
    name="inference",
    settings=InferenceSettings,
    enabled=lambda ctx: _settings(ctx).inference_enabled,
    command=python_module("services.inference"),
    priority=30,
    stop_wait=5,
    prepare=prepare,
    ready=ready,
    interactive=True,
    status=status,
    endpoint=lambda ctx: ctx.cloud.endpoint(_settings(ctx).inference_port, "http"),
)
