"""RunPod: GPU types through GraphQL (the only listing with prices and stock), everything else through the REST
API (rest.runpod.io/v1: pods, templates). Both take the key as `Authorization: Bearer`. The official `runpod`
package is its serverless worker SDK and pulls in aiohttp, boto3, fastapi and paramiko, so plain requests it is."""
from __future__ import annotations

from typing import Any

from host.api import Client
from host.keys import ApiKey
from host.pods import Gpu, LaunchRequest, Pod, Template
from host.settings import HostSettings

PORTS = ["22/tcp", "8888/http", "8000/http"]
HINT = ("check the key at https://www.runpod.io/console/user/settings (pods need read/write); "
        "`podvisor cloud doctor` says where it was found")
TEMPLATE_FIELDS = ("name", "imageName", "containerDiskInGb", "volumeInGb", "volumeMountPath", "ports", "env",
                   "dockerEntrypoint", "dockerStartCmd", "readme", "isPublic")
"""What PATCH /templates/{id} takes; create also takes category and isServerless."""


class RunPod:
    name = "runpod"
    template_file = "runpod/template.json"

    def __init__(self, key: ApiKey, settings: HostSettings) -> None:
        self.client = Client("RunPod", key, HINT)
        self.rest = settings.runpod_rest_url.rstrip("/")
        self.graphql = settings.runpod_graphql_url

    def gpus(self, min_vram: float, max_price: float | None, cloud: str | None, count: int) -> list[Gpu]:
        where = "" if cloud is None else f", secureCloud: {'true' if cloud == 'secure' else 'false'}"
        query = ("query GpuTypes { gpuTypes { id displayName memoryInGb secureCloud communityCloud "
                 f"lowestPrice(input: {{gpuCount: {count}{where}}}) {{ uninterruptablePrice stockStatus }} }} }}")
        answer = self.client.call("POST", self.graphql, {"query": query})
        if answer.get("errors"):
            raise RuntimeError("RunPod GraphQL: " + "; ".join(e.get("message", "?") for e in answer["errors"])[:300])
        out = []
        for item in answer["data"]["gpuTypes"]:
            price = (item.get("lowestPrice") or {}).get("uninterruptablePrice")
            clouds = [c for c in ("secure", "community") if item.get(f"{c}Cloud")]
            if not price or (cloud and cloud not in clouds) or (item.get("memoryInGb") or 0) < min_vram:
                continue
            if max_price is not None and price > max_price:
                continue
            out.append(Gpu(item["id"], item.get("displayName") or item["id"], item.get("memoryInGb") or 0,
                           round(float(price), 3), cloud or "/".join(clouds),
                           (item.get("lowestPrice") or {}).get("stockStatus") or "unknown"))
        return sorted(out, key=lambda g: g.price_per_hour)

    def templates(self, name: str | None) -> list[Template]:
        found = [Template(t["id"], t.get("name", ""), t.get("imageName", ""))
                 for t in self.client.call("GET", f"{self.rest}/templates") or []]
        return [t for t in found if name is None or name.lower() in t.name.lower()]

    def push_template(self, spec: dict) -> tuple[str, Template]:
        same = [t for t in self.templates(spec["name"]) if t.name == spec["name"]]
        if same:
            body = {k: v for k, v in spec.items() if k in TEMPLATE_FIELDS}
            made = self.client.call("PATCH", f"{self.rest}/templates/{same[0].id}", body)
            action = "updated"
        else:
            made = self.client.call("POST", f"{self.rest}/templates", spec)
            action = "created"
        return action, Template(made["id"], made.get("name", spec["name"]), made.get("imageName", spec["imageName"]))

    def launch(self, request: LaunchRequest) -> Pod:
        body: dict[str, Any] = {"name": request.name, "gpuTypeIds": [request.gpu], "gpuCount": request.count}
        if request.template is not None:
            body["templateId"] = request.template.id
        else:
            body.update(imageName=request.image, ports=PORTS, volumeMountPath="/workspace")
        if request.cloud:
            body["cloudType"] = request.cloud.upper()
        if request.env:
            body["env"] = request.env
        if request.volume_gb is not None:
            body["volumeInGb"] = request.volume_gb
        return self._pod(self.client.call("POST", f"{self.rest}/pods", body))

    def pods(self) -> list[Pod]:
        return [self._pod(p) for p in self.client.call("GET", f"{self.rest}/pods") or []]

    def pod(self, pod_id: str) -> Pod:
        return self._pod(self.client.call("GET", f"{self.rest}/pods/{pod_id}"))

    def stop(self, pod_id: str) -> None:
        self.client.call("POST", f"{self.rest}/pods/{pod_id}/stop")

    def terminate(self, pod_id: str) -> None:
        self.client.call("DELETE", f"{self.rest}/pods/{pod_id}")

    def check_key(self) -> str:
        return f"GET /pods accepted it ({len(self.client.call('GET', f'{self.rest}/pods') or [])} pod(s))"

    @staticmethod
    def _pod(raw: dict) -> Pod:
        ssh_port = (raw.get("portMappings") or {}).get("22")
        pod_id = raw["id"]
        gpu = (raw.get("gpu") or {}).get("displayName") or (raw.get("machine") or {}).get("gpuTypeId") or ""
        urls = {"jupyter": f"https://{pod_id}-8888.proxy.runpod.net/lab", "api": f"https://{pod_id}-8000.proxy.runpod.net/"}
        price = raw.get("costPerHr")
        return Pod(pod_id, raw.get("name") or "", raw.get("desiredStatus") or "UNKNOWN", gpu,
                   float(price) if price not in (None, "") else None, raw.get("publicIp") or None,
                   int(ssh_port) if ssh_port else None, urls)
