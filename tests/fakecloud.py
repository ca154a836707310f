"""RunPod's and Vast.ai's control APIs as loopback stand-ins with state: GPU listings, templates, and pods that
come up a few polls after they are created, at an SSH address the test chooses (a real sshd on loopback, or a
closed port). Shapes follow the documented APIs: RunPod GraphQL `gpuTypes` and REST v1 `/pods`, `/templates`;
Vast `/bundles/`, `/asks/{id}/`, `/instances/`, `/template/`. Every request is recorded by FakeApi."""
from __future__ import annotations

import os
import re
import subprocess
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fakeapi import FakeApi

KEY = "rpa_FAKEKEY0123456789abcdef"


class FakeRunPod(FakeApi):
    def __init__(self, key: str = KEY, ssh_port: int = 0, ssh_host: str = "127.0.0.1", polls_before_up: int = 1) -> None:
        self.key, self.ssh_host, self.ssh_port, self.polls_before_up = key, ssh_host, ssh_port, polls_before_up
        self.graphql_status = 200
        self.pods: dict[str, dict] = {}
        self.templates: dict[str, dict] = {}
        super().__init__(answer=self.route)
        self.env = {"RUNPOD_REST_URL": f"{self.url}/v1", "RUNPOD_GRAPHQL_URL": f"{self.url}/graphql",
                    "RUNPOD_API_KEY": key}

    def route(self, request: dict) -> tuple[int, Any]:
        if request["headers"].get("Authorization") != f"Bearer {self.key}":
            return 401, {"error": "invalid api key"}
        method, path, body = request["method"], urlsplit(request["path"]).path, request["body"]
        if path == "/graphql":
            return self.graphql_status, {"data": {"gpuTypes": [
                {"id": "NVIDIA GeForce RTX 4090", "displayName": "RTX 4090", "memoryInGb": 24, "secureCloud": True,
                 "communityCloud": True, "lowestPrice": {"uninterruptablePrice": 0.69, "stockStatus": "High"}},
                {"id": "NVIDIA A100 80GB PCIe", "displayName": "A100 PCIe", "memoryInGb": 80, "secureCloud": True,
                 "communityCloud": False, "lowestPrice": {"uninterruptablePrice": 1.64, "stockStatus": "Low"}},
                {"id": "NVIDIA GeForce RTX 3090", "displayName": "RTX 3090", "memoryInGb": 24, "secureCloud": False,
                 "communityCloud": True, "lowestPrice": {"uninterruptablePrice": 0.22, "stockStatus": "Medium"}},
                {"id": "NVIDIA H100 80GB HBM3", "displayName": "H100 SXM", "memoryInGb": 80, "secureCloud": True,
                 "communityCloud": False, "lowestPrice": {"uninterruptablePrice": None, "stockStatus": None}},
            ]}}
        if path == "/v1/templates":
            if method == "POST":
                made = {**body, "id": f"tpl{len(self.templates) + 1}"}
                self.templates[made["id"]] = made
                return 200, made
            return 200, list(self.templates.values())
        if m := re.fullmatch(r"/v1/templates/(\w+)", path):
            self.templates[m[1]].update(body)
            return 200, self.templates[m[1]]
        if path == "/v1/pods":
            if method == "POST":
                pod = {"id": f"pod{len(self.pods) + 1}x7k2", "name": body["name"], "desiredStatus": "RUNNING",
                       "costPerHr": 0.69, "gpu": {"displayName": "RTX 4090"}, "publicIp": None,
                       "portMappings": None, "polls": 0}
                self.pods[pod["id"]] = pod
                return 201, self.view(pod)
            return 200, [self.view(p) for p in self.pods.values()]
        if m := re.fullmatch(r"/v1/pods/(\w+)(/stop)?", path):
            pod = self.pods.get(m[1])
            if pod is None:
                return 404, {"error": "pod not found"}
            if method == "DELETE":
                del self.pods[m[1]]
                return 204, None
            if m[2]:
                pod["desiredStatus"] = "EXITED"
                return 200, self.view(pod)
            pod["polls"] += 1
            if pod["polls"] > self.polls_before_up and pod["desiredStatus"] == "RUNNING":
                pod.update(publicIp=self.ssh_host, portMappings={"22": self.ssh_port, "8888": 8888})
            return 200, self.view(pod)
        return 404, {"error": f"no route {method} {path}"}

    @staticmethod
    def view(pod: dict) -> dict:
        return {k: v for k, v in pod.items() if k != "polls"}


class FakeVast(FakeApi):
    def __init__(self, key: str = KEY, ssh_port: int = 0, ssh_host: str = "127.0.0.1", polls_before_up: int = 1) -> None:
        self.key, self.ssh_host, self.ssh_port, self.polls_before_up = key, ssh_host, ssh_port, polls_before_up
        self.instances: dict[str, dict] = {}
        self.templates: dict[str, dict] = {}
        super().__init__(answer=self.route)
        self.env = {"VAST_API_URL": f"{self.url}/api/v0", "VAST_API_KEY": key}

    def route(self, request: dict) -> tuple[int, Any]:
        if request["headers"].get("Authorization") != f"Bearer {self.key}":
            return 401, {"success": False, "error": "invalid_user", "msg": "bad api key"}
        method, url, body = request["method"], urlsplit(request["path"]), request["body"]
        path = url.path
        if path == "/api/v0/users/current/":
            return 200, {"id": 7, "credit": 12.5}
        if path == "/api/v0/bundles/":
            offers = [{"id": 9001, "gpu_name": "RTX 4090", "num_gpus": 1, "gpu_ram": 24564, "dph_total": 0.41,
                       "geolocation": "Norway, NO", "reliability2": 0.998, "datacenter": False},
                      {"id": 9002, "gpu_name": "RTX 4090", "num_gpus": 1, "gpu_ram": 24564, "dph_total": 0.35,
                       "geolocation": "Texas, US", "reliability2": 0.991, "datacenter": True},
                      {"id": 9003, "gpu_name": "A100 SXM4", "num_gpus": 1, "gpu_ram": 81920, "dph_total": 1.10,
                       "geolocation": "Quebec, CA", "reliability2": 0.999, "datacenter": True}]
            wanted = (body.get("gpu_name") or {}).get("eq")
            return 200, {"offers": [o for o in offers if wanted in (None, o["gpu_name"])]}
        if path == "/api/v0/template/":
            if method == "GET":
                wanted = (parse_qs(url.query).get("select_filters") or ["{}"])[0]
                return 200, {"templates": [t for t in self.templates.values() if t["name"] in wanted or wanted == "{}"]}
            if method == "POST":
                made = {**body, "id": len(self.templates) + 1, "hash_id": f"h{len(self.templates) + 1:031d}"}
                self.templates[made["hash_id"]] = made
                return 200, {"success": True, "template": {"id": made["id"], "hash_id": made["hash_id"]}}
            self.templates[body["hash_id"]].update(body)
            return 200, {"success": True, "template": self.templates[body["hash_id"]]}
        if m := re.fullmatch(r"/api/v0/asks/(\d+)/", path):
            instance = {"id": 4242 + len(self.instances), "label": body.get("label"), "actual_status": None,
                        "gpu_name": "RTX 4090", "num_gpus": 1, "dph_total": 0.35, "public_ipaddr": None,
                        "ports": {}, "offer": int(m[1]), "polls": 0}
            self.instances[str(instance["id"])] = instance
            return 200, {"success": True, "new_contract": instance["id"]}
        if path == "/api/v0/instances/":
            return 200, {"instances_found": len(self.instances), "instances": [self.view(i) for i in self.instances.values()]}
        if m := re.fullmatch(r"/api/v0/instances/(\d+)/", path):
            instance = self.instances.get(m[1])
            if instance is None:
                return 404, {"success": False, "msg": "no such instance"}
            if method == "DELETE":
                del self.instances[m[1]]
                return 200, {"success": True}
            if method == "PUT":
                instance["actual_status"] = body["state"]
                return 200, {"success": True}
            instance["polls"] += 1
            if instance["polls"] == 1:
                instance["actual_status"] = "loading"
            if instance["polls"] > self.polls_before_up and instance["actual_status"] == "loading":
                instance.update(actual_status="running", public_ipaddr=f"{self.ssh_host}\n",
                                ports={"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(self.ssh_port)}],
                                       "8888/tcp": [{"HostIp": "0.0.0.0", "HostPort": "41888"}]})
            return 200, {"instances": self.view(instance)}
        return 404, {"error": f"no route {method} {path}"}

    @staticmethod
    def view(instance: dict) -> dict:
        return {k: v for k, v in instance.items() if k != "polls"}


def run_cloud(api: FakeApi, config_home, *argv: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """The real `podvisor cloud` command, as a laptop runs it: the stand-in's URLs and key, its own config dir."""
    from conftest import PODVISOR

    env = {"PATH": os.environ["PATH"], "HOME": str(config_home), "XDG_CONFIG_HOME": str(config_home), **api.env}
    result = subprocess.run([PODVISOR, "cloud", *argv], env=env, capture_output=True, text=True, timeout=timeout)
    assert api.key not in result.stdout + result.stderr, "the API key was printed"
    return result
