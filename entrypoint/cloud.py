"""Which cloud runs this pod, and how a user outside reaches a port inside it.

Providers announce themselves through variables they inject; each maps container ports to public ones
differently, so status, the login banner and the container log print an address that actually works, in the
form the provider's own console shows (`ssh root@HOST -p PORT` on RunPod and Vast).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping

CLOUD_VARIABLES = re.compile(
    r"^(RUNPOD_\w+|VAST_\w+|CONTAINER_ID|PUBLIC_IPADDR|KUBERNETES_SERVICE_HOST|POD_IP|HOSTNAME)$")
"""What detection and the endpoints read from a provider's injected variables (secrets among them are the
caller's to drop)."""
ROOT_CONSOLE_PROVIDERS = ("runpod", "vast")
"""Providers whose Connect dialog tells users `ssh root@HOST -p PORT`: root may log in with a key there."""


@dataclass(frozen=True)
class Cloud:
    provider: str
    instance_id: str | None
    public_ip: str | None
    environ: Mapping[str, str]

    def pod_id(self, provider: str) -> str | None:
        """This pod's id in `provider`'s API: the detected instance, or the id that provider injected when
        another provider is named (PODVISOR_PROVIDER), so its stop action still knows what to stop."""
        if provider == self.provider:
            return self.instance_id
        return _instance(provider, self.environ)

    @property
    def console_logs_in_as_root(self) -> bool:
        return self.provider in ROOT_CONSOLE_PROVIDERS

    def endpoint(self, port: int, kind: str, user: str = "root", path: str = "/") -> str:
        """How to reach container `port` from outside: `kind` is "ssh" (a command for `user`) or "http" (a URL
        ending in `path`)."""
        env = self.environ
        if self.provider in ROOT_CONSOLE_PROVIDERS:
            if self.provider == "runpod" and kind == "http" and self.instance_id:
                return f"https://{self.instance_id}-{port}.proxy.runpod.net{path}"
            mapped = env.get(f"{self.provider.upper()}_TCP_PORT_{port}")
            if mapped and self.public_ip:
                return _format(kind, self.public_ip, int(mapped), user, path)
            where = "the template's ports" if self.provider == "runpod" else "the template's docker options (-p)"
            return f"port {port} is not published to the internet: add it to {where}"
        if self.provider == "kubernetes":
            host = env.get("POD_IP") or env.get("HOSTNAME", "pod")
            return _format(kind, host, port, user, path) + " (inside the cluster)"
        if self.provider == "docker":
            return _format(kind, "HOST", port, user, path) + f" (publish it: docker run -p {port}:{port})"
        return _format(kind, self.public_ip or "127.0.0.1", port, user, path)


def _format(kind: str, host: str, port: int, user: str, path: str) -> str:
    return f"ssh {user}@{host} -p {port}" if kind == "ssh" else f"http://{host}:{port}{path}"


def detect(environ: Mapping[str, str] | None = None, forced: str = "auto") -> Cloud:
    """Detect the provider from its injected variables; `forced` (PODVISOR_PROVIDER) wins when not auto."""
    env = dict(os.environ if environ is None else environ)
    provider = forced if forced != "auto" else _guess(env)
    if provider == "runpod":
        return Cloud("runpod", _instance("runpod", env), env.get("RUNPOD_PUBLIC_IP"), env)
    if provider == "vast":
        return Cloud("vast", _instance("vast", env), env.get("PUBLIC_IPADDR"), env)
    if provider == "kubernetes":
        return Cloud("kubernetes", env.get("HOSTNAME"), None, env)
    if provider == "docker":
        return Cloud("docker", env.get("HOSTNAME"), None, env)
    return Cloud("local", None, None, env)


def _instance(provider: str, env: Mapping[str, str]) -> str | None:
    """The pod id a provider injects: RUNPOD_POD_ID, Vast's CONTAINER_ID (or its label C.<id>)."""
    if provider == "runpod":
        return env.get("RUNPOD_POD_ID") or None
    if provider == "vast":
        return env.get("CONTAINER_ID") or env.get("VAST_CONTAINERLABEL", "").removeprefix("C.") or None
    return None


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
