"""inference: FastAPI + uvicorn serving the newest model, hot-reloaded, dynamically batched, behind a token:
INFERENCE_API_TOKEN, else one it makes (kept on the volume, readable by the login user) and says where to read."""
from __future__ import annotations

import logging
import pwd
import time
from pathlib import Path
from typing import Any

import requests

from entrypoint import generated_token, login_user
from entrypoint.context import PodContext
from entrypoint.probes import http_status, local_host
from entrypoint.registry import Activity, LastUse, Program, Readiness, Service, python_module
from services.inference.settings import InferenceSettings

log = logging.getLogger("podvisor")


def _settings(ctx: PodContext) -> InferenceSettings:
    return ctx.settings(InferenceSettings)


def bind_host(ctx: PodContext) -> str:
    """Without a token the API stays on loopback, unless the user explicitly allows an open API."""
    settings = _settings(ctx)
    if settings.inference_api_token or settings.inference_allow_unauthenticated:
        return ctx.core.podvisor_bind_host
    return "127.0.0.1"


def token_file(ctx: PodContext) -> Path:
    """The generated token, readable by the login user and root only."""
    return ctx.paths.service_dir("inference") / "token"


def api_token(ctx: PodContext) -> str | None:
    """The bearer token the API requires: INFERENCE_API_TOKEN, else the generated one."""
    settings = _settings(ctx)
    if settings.inference_api_token:
        return settings.inference_api_token.get_secret_value()
    return generated_token.read(token_file(ctx))


def auth_hint(ctx: PodContext) -> str:
    """Where the user finds the token, never the token itself."""
    if _settings(ctx).inference_api_token:
        return "token: your INFERENCE_API_TOKEN"
    return f"token: generated, read it with `cat {token_file(ctx)}` (or set INFERENCE_API_TOKEN)"


def prepare(ctx: PodContext) -> None:
    settings = _settings(ctx)
    if settings.inference_api_token:
        return
    generated_token.ensure(token_file(ctx), pwd.getpwnam(login_user.name(ctx)))
    if settings.inference_allow_unauthenticated:
        log.warning("!!! the inference API answers WITHOUT a token (INFERENCE_ALLOW_UNAUTHENTICATED=true), "
                    "on %s; /reload still needs the %s !!!", bind_host(ctx), auth_hint(ctx))
    else:
        where = "" if bind_host(ctx) == ctx.core.podvisor_bind_host else ", and listens on 127.0.0.1 only"
        log.info("inference: no INFERENCE_API_TOKEN, so it requires a generated token%s: %s", where,
                 auth_hint(ctx).removeprefix("token: generated, "))


def _url(ctx: PodContext, path: str) -> str:
    return f"http://{local_host(bind_host(ctx))}:{_settings(ctx).inference_port}{path}"


def endpoint(ctx: PodContext) -> str:
    """Where users reach the API: the provider's address when it listens there; without a token it listens on
    loopback only, and a proxy URL would announce an address that never answers."""
    if bind_host(ctx) != ctx.core.podvisor_bind_host:
        return f"{_url(ctx, '/')} (inside the pod only: set INFERENCE_API_TOKEN to publish it)"
    return ctx.cloud.endpoint(_settings(ctx).inference_port, "http")


def ready(ctx: PodContext) -> Readiness:
    """The API answers. Whether a model is loaded is the API's own readiness (/readyz, shown by `status`): a
    fresh pod has no model yet, and its SSH and Jupyter must not be kept from traffic for that."""
    return http_status(_url(ctx, "/healthz"))


def status(ctx: PodContext) -> dict[str, Any]:
    token = api_token(ctx)
    try:
        answer = requests.get(_url(ctx, "/readyz"), headers={"Authorization": f"Bearer {token}"} if token else {},
                              timeout=2).json()
    except (requests.RequestException, ValueError) as exc:
        return {"model_ready": False, "summary": f"model: unknown, /readyz does not answer ({type(exc).__name__})"}
    if answer.get("ready"):
        return {"model_ready": True, "summary": f"model {answer.get('model')} loaded; {auth_hint(ctx)}"}
    return {"model_ready": False,
            "summary": f"no model served yet: {answer.get('reason', answer)}; {auth_hint(ctx)}"}


def activity(ctx: PodContext) -> LastUse:
    """The API touches its heartbeat file on real inference (not health checks or scrapes) once a second."""
    try:
        at = ctx.paths.heartbeat_file("inference").stat().st_mtime
    except FileNotFoundError:
        return LastUse(None, "no inference request yet")
    return LastUse(at, f"last inference request {time.time() - at:.0f} s ago")


SERVICE = Service(
    name="inference",
    settings=InferenceSettings,
    enabled=lambda ctx: _settings(ctx).inference_enabled,
    program=Program(command=python_module("services.inference"), priority=30, stop_wait=5),
    prepare=prepare,
    ready=ready,
    interactive=True,
    status=status,
    endpoint=endpoint,
    capabilities=(Activity(last=activity),),
)
