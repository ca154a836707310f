"""Readiness probes shared by services: a TCP banner, an HTTP status."""
from __future__ import annotations

import socket

import requests

from entrypoint.registry import Readiness


def local_host(bind_host: str) -> str:
    """Where to reach a service bound to `bind_host` from inside the pod."""
    return "127.0.0.1" if bind_host in ("0.0.0.0", "::", "") else bind_host


def tcp_banner(host: str, port: int, prefix: bytes, timeout: float = 2.0) -> Readiness:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            banner = sock.recv(64)
    except OSError as exc:
        return Readiness(False, f"nothing answers on {host}:{port} ({exc.strerror or type(exc).__name__})")
    if banner.startswith(prefix):
        return Readiness(True, banner.decode(errors="replace").strip())
    return Readiness(False, f"{host}:{port} answered with an unexpected banner")


def http_status(url: str, expect: int = 200, headers: dict[str, str] | None = None,
                timeout: float = 2.0) -> Readiness:
    try:
        response = requests.get(url, headers=headers or {}, timeout=timeout)
    except requests.RequestException as exc:
        return Readiness(False, f"{url} does not answer ({type(exc).__name__})")
    if response.status_code == expect:
        return Readiness(True, f"HTTP {response.status_code}")
    return Readiness(False, f"{url} answered HTTP {response.status_code}: {response.text[:200]}")
