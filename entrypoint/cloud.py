"""Which cloud runs this pod, and how a user outside reaches a port inside it.

Providers announce themselves through variables they inject; each maps container ports to public ones
differently, so status and the login banner can print an address that actually works.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping


@dataclass(frozen=True)
class Cloud:
    provider: str
    instance_id: str | None
    public_ip: str | None
    environ: Mapping[str, str]

    def endpoint(self, port: int, kind: str) -> str:
        """How to reach container `port` from outside: `kind` is "ssh" (a TCP port) or "http"."""
        env = self.environ
        if self.provider == "runpod":
            if kind == "http" and self.instance_id:
                return f"https://{self.instance_id}-{port}.proxy.runpod.net"
            mapped = env.get(f"RUNPOD_TCP_PORT_{port}")
            if mapped and self.public_ip:
                return _format(kind, self.public_ip, int(mapped))
        if self.provider == "vast":
            mapped = env.get(f"VAST_TCP_PORT_{port}")
            if mapped and self.public_ip:
                return _format(kind, self.public_ip, int(mapped))
        if self.provider == "kubernetes":
            return _format(kind, env.get("POD_IP") or env.get("HOSTNAME", "pod"), port) + " (inside the cluster)"
        if self.provider == "docker":
            return _format(kind, "<host>", port) + f" (publish it: -p {port}:{port})"
        return _format(kind, self.public_ip or "127.0.0.1", port)


def _format(kind: str, host: str, port: int) -> str:
    return f"ssh -p {port} <user>@{host}" if kind == "ssh" else f"http://{host}:{port}"


def detect(environ: Mapping[str, str] | None = None, forced: str = "auto") -> Cloud:
    """Detect the provider from its injected variables; `forced` (PODVISOR_PROVIDER) wins when not auto."""
    env = dict(os.environ if environ is None else environ)
    provider = forced if forced != "auto" else _guess(env)
    if provider == "runpod":
        return Cloud("runpod", env.get("RUNPOD_POD_ID"), env.get("RUNPOD_PUBLIC_IP"), env)
    if provider == "vast":
        instance = env.get("CONTAINER_ID") or env.get("VAST_CONTAINERLABEL", "").removeprefix("C.") or None
        return Cloud("vast", instance, env.get("PUBLIC_IPADDR"), env)
    if provider == "kubernetes":
        return Cloud("kubernetes", env.get("HOSTNAME"), None, env)
    if provider == "docker":
        return Cloud("docker", env.get("HOSTNAME"), None, env)
    return Cloud("local", None, None, env)


def _guess(env: Mapping[str, str]) -> str:
    if env.get("RUNPOD_POD_ID"):
        return "runpod"
    if env.get("VAST_CONTAINERLABEL") or env.get("CONTAINER_ID"):
        return "vast"
    if env.get("KUBERNETES_SERVICE_HOST"):
        return "kubernetes"
    if Path("/.dockerenv").exists() or Path("/run/.containerenv").exists():
        return "docker"
    return "local"
