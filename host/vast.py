"""Vast.ai through its REST API (console.vast.ai/api/v0), the key as `Authorization: Bearer`. A launch rents the
cheapest verified on-demand offer that matches, with a direct port for SSH. The `vastai` package is a CLI that
prints tables; its SDK wraps the same calls, so plain requests keep the requests and their bodies in view."""
from __future__ import annotations

import json
from typing import Any

from host.api import ApiError, Client
from host.keys import ApiKey
from host.pods import Gpu, LaunchRequest, Pod, Template
from host.settings import HostSettings

PORT_FLAGS = {"-p 22:22": "1", "-p 8888:8888": "1", "-p 8000:8000": "1"}
HINT = "check the key at https://cloud.vast.ai/manage-keys/; `podvisor cloud doctor` says where it was found"
TEMPLATE_FIELDS = ("name", "image", "tag", "desc", "readme", "runtype", "args_str", "onstart", "env", "use_ssh",
                   "ssh_direct", "jup_direct", "recommended_disk_space", "private")


class Vast:
    name = "vast"
    template_file = "vast/template.json"

    def __init__(self, key: ApiKey, settings: HostSettings) -> None:
        self.client = Client("Vast.ai", key, HINT)
        self.base = settings.vast_api_url.rstrip("/")

    def offers(self, gpu: str | None, min_vram: float, max_price: float | None, cloud: str | None,
               count: int) -> list[dict]:
        query: dict[str, Any] = {"verified": {"eq": True}, "rentable": {"eq": True}, "num_gpus": {"eq": count},
                                 "direct_port_count": {"gte": 1}, "type": "on-demand",
                                 "order": [["dph_total", "asc"]], "limit": 64}
        if gpu:
            query["gpu_name"] = {"eq": gpu}
        if min_vram:
            query["gpu_ram"] = {"gte": min_vram * 1024}
        if max_price is not None:
            query["dph_total"] = {"lte": max_price}
        if cloud == "secure":
            query["datacenter"] = {"eq": True}
        return (self.client.call("POST", f"{self.base}/bundles/", query) or {}).get("offers", [])

    def gpus(self, min_vram: float, max_price: float | None, cloud: str | None, count: int) -> list[Gpu]:
        return sorted((Gpu(str(o["id"]), o.get("gpu_name", ""), round((o.get("gpu_ram") or 0) / 1024, 1),
                           round(float(o.get("dph_total") or 0), 3), "datacenter" if o.get("datacenter") else "community",
                           f"{o.get('geolocation') or '?'}, reliability {o.get('reliability2') or o.get('reliability') or '?'}")
                       for o in self.offers(None, min_vram, max_price, cloud, count)),
                      key=lambda g: g.price_per_hour)

    def templates(self, name: str | None) -> list[Template]:
        filters = json.dumps({"name": {"eq": name}} if name else {})
        rows = (self.client.call("GET", f"{self.base}/template/",
                                 params={"select_cols": '["*"]', "select_filters": filters}) or {}).get("templates", [])
        return [Template(t["hash_id"], t.get("name", ""), f"{t.get('image', '')}:{t.get('tag') or 'latest'}")
                for t in rows]

    def push_template(self, spec: dict) -> tuple[str, Template]:
        body = {k: v for k, v in spec.items() if k in TEMPLATE_FIELDS}
        same = [t for t in self.templates(spec["name"]) if t.name == spec["name"]]
        if same:
            made = self.client.call("PUT", f"{self.base}/template/", {**body, "hash_id": same[0].id})
            action = "updated"
        else:
            made = self.client.call("POST", f"{self.base}/template/", body)
            action = "created"
        made = (made or {}).get("template") or {}
        return action, Template(made.get("hash_id", same[0].id if same else ""), spec["name"],
                                f"{spec['image']}:{spec.get('tag') or 'latest'}")

    def launch(self, request: LaunchRequest) -> Pod:
        if request.gpu and request.gpu.isdigit():
            offer = int(request.gpu)  # an offer id from `cloud gpus`
        else:
            found = self.offers(request.gpu, 0, request.max_price, request.cloud, request.count)
            if not found:
                raise ApiError(f"Vast.ai has no verified on-demand offer of {request.count} x {request.gpu}"
                               + (f" under ${request.max_price}/h" if request.max_price else "")
                               + "; `podvisor cloud gpus --provider vast` lists what there is")
            offer = min(found, key=lambda o: o.get("dph_total") or 0)["id"]  # the cheapest, whatever the order
        body: dict[str, Any] = {"client_id": "me", "label": request.name, "runtype": "args"}
        if request.template is not None:
            body["template_hash_id"] = request.template.id
            if request.env:
                body["env"] = request.env
        else:
            body.update(image=request.image, env={**PORT_FLAGS, **request.env})
        if request.volume_gb is not None:
            body["disk"] = request.volume_gb
        made = self.client.call("PUT", f"{self.base}/asks/{offer}/", body)
        if not (made or {}).get("success"):
            raise ApiError(f"Vast.ai did not rent offer {offer}: {(made or {}).get('msg') or made}")
        return self.pod(str(made["new_contract"]))

    def pods(self) -> list[Pod]:
        return [self._pod(i) for i in (self.client.call("GET", f"{self.base}/instances/") or {}).get("instances", [])]

    def pod(self, pod_id: str) -> Pod:
        return self._pod(self.client.call("GET", f"{self.base}/instances/{pod_id}/")["instances"])

    def stop(self, pod_id: str) -> None:
        self.client.call("PUT", f"{self.base}/instances/{pod_id}/", {"state": "stopped"})

    def terminate(self, pod_id: str) -> None:
        self.client.call("DELETE", f"{self.base}/instances/{pod_id}/")

    def check_key(self) -> str:
        self.client.call("GET", f"{self.base}/users/current/")
        return "GET /users/current/ accepted it"

    @staticmethod
    def _pod(raw: dict) -> Pod:
        ip = raw.get("public_ipaddr") or None
        ports = {name: int(bindings[0]["HostPort"]) for name, bindings in (raw.get("ports") or {}).items() if bindings}
        urls = {label: f"http://{ip}:{ports[port]}{path}" for label, port, path in
                (("jupyter", "8888/tcp", "/lab"), ("api", "8000/tcp", "/")) if ip and port in ports}
        gpu = f"{raw.get('num_gpus') or 1} x {raw.get('gpu_name') or '?'}"
        price = raw.get("dph_total")
        return Pod(str(raw["id"]), raw.get("label") or "", (raw.get("actual_status") or "provisioning").upper(), gpu,
                   float(price) if price is not None else None, ip.strip() if ip else None, ports.get("22/tcp"), urls)
