"""Vast.ai through its REST API (console.vast.ai/api/v0), the key as `Authorization: Bearer`. A launch rents the
cheapest verified on-demand offer that matches, with a direct port for SSH. The `vastai` package is a CLI that
prints tables; its SDK wraps the same calls, so plain requests keep the requests and their bodies in view.

Units and spellings as the official client (vast-ai/vast-cli, vast.py) sends them: `gpu_ram` in MB of 1000 (a
GB is ×1000, not ×1024, or `--min-vram 80` drops every H100), GPU names with spaces (`RTX_4090` as its CLI
writes it means `RTX 4090`), and `allocated_storage` in GB, so `dph_total` and `--max-price` include the disk.
Bodies in the forms Vast's published OpenAPI gives, where the client's differ: `env` as one string of docker
flags, offer `type` "ondemand", `order` as two [field, direction] pairs, a rent's `image` even from a template.
"""
from __future__ import annotations

import json
import shlex
from typing import Any

from host.api import ApiError, Client
from host.keys import ApiKey
from host.pods import Gpu, LaunchRequest, Pod, Template, created_despite
from host.settings import HostSettings

PORT_FLAGS = "-p 22:22 -p 8888:8888 -p 8000:8000"
HINT = "check the key at https://cloud.vast.ai/manage-keys/; `podvisor cloud doctor` says where it was found"
TEMPLATE_FIELDS = ("name", "image", "tag", "desc", "readme", "runtype", "args_str", "onstart", "env", "use_ssh",
                   "ssh_direct", "jup_direct", "recommended_disk_space", "private")
MB_PER_GB = 1000
"""Vast's gpu_ram unit, as its own client multiplies (offers_mult in vast.py)."""
DISK_GB = 100
"""The disk priced into offers and rented when no --volume-gb says otherwise: our template's
recommended_disk_space."""


class Vast:
    name = "vast"
    template_file = "vast.json"
    logs = None  # Vast's logs come through a request and a later download; `cloud logs` needs SSH there

    def __init__(self, key: ApiKey, settings: HostSettings) -> None:
        self.client = Client("Vast.ai", key, HINT)
        self.base = settings.vast_api_url.rstrip("/")

    def offers(self, gpu: str | None, min_vram: float, max_price: float | None, cloud: str | None,
               count: int, disk_gb: int = DISK_GB) -> list[dict]:
        """Offers with room for `disk_gb`, priced with it (`allocated_storage`), cheapest first."""
        query: dict[str, Any] = {"verified": {"eq": True}, "rentable": {"eq": True}, "num_gpus": {"eq": count},
                                 "direct_port_count": {"gte": 1}, "type": "ondemand",
                                 "disk_space": {"gte": disk_gb}, "allocated_storage": disk_gb,
                                 "order": [["dph_total", "asc"], ["reliability2", "desc"]], "limit": 64}
        if gpu:
            query["gpu_name"] = {"eq": gpu.replace("_", " ")}
        if min_vram:
            query["gpu_ram"] = {"gte": min_vram * MB_PER_GB}
        if max_price is not None:
            query["dph_total"] = {"lte": max_price}
        if cloud == "secure":
            query["datacenter"] = {"eq": True}
        return (self.client.call("POST", f"{self.base}/bundles/", query) or {}).get("offers", [])

    def gpus(self, min_vram: float, max_price: float | None, cloud: str | None, count: int) -> list[Gpu]:
        return sorted((Gpu(str(o["id"]), o.get("gpu_name", ""), round((o.get("gpu_ram") or 0) / MB_PER_GB, 1),
                           round(float(o.get("dph_total") or 0), 3),
                           "datacenter" if o.get("datacenter") else "community",
                           f"{o.get('geolocation') or '?'}, "
                           f"reliability {o.get('reliability2') or o.get('reliability') or '?'}")
                       for o in self.offers(None, min_vram, max_price, cloud, count)),
                      key=lambda g: g.price_per_hour)

    def templates(self, name: str | None) -> list[Template]:
        """Your own templates: the search covers everyone's public ones too, so a stranger's template of the same
        name would be updated by `template push` (refused) or make `--template NAME` ambiguous."""
        me = (self.client.call("GET", f"{self.base}/users/current/") or {}).get("id")
        filters = json.dumps({"creator_id": {"eq": me}, **({"name": {"eq": name}} if name else {})})
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
        disk = request.volume_gb if request.volume_gb is not None else DISK_GB
        if request.gpu and request.gpu.isdigit():
            offer = int(request.gpu)  # an offer id from `cloud gpus`
        else:
            found = self.offers(request.gpu, 0, request.max_price, request.cloud, request.count, disk)
            if not found:
                raise ApiError(f"Vast.ai has no verified on-demand offer of {request.count} x {request.gpu}"
                               + (f" under ${request.max_price}/h" if request.max_price else "")
                               + "; `podvisor cloud gpus --provider vast` lists what there is")
            offer = min(found, key=lambda o: o.get("dph_total") or 0)["id"]  # the cheapest, whatever the order
        body: dict[str, Any] = {"client_id": "me", "label": request.name, "runtype": "args"}
        flags = " ".join(f"-e {shlex.quote(f'{k}={v}')}" for k, v in request.env.items())
        if request.template is not None:  # its image too: the published schema requires one
            body.update(template_hash_id=request.template.id, image=request.template.image)
            if flags:
                body["env"] = flags
        else:
            body.update(image=request.image, env=" ".join(filter(None, [PORT_FLAGS, flags])))
        body["disk"] = disk
        before = {pod.id for pod in self.pods()}
        try:  # a rent is a PUT, but not one to repeat: sent once
            made = self.client.call("PUT", f"{self.base}/asks/{offer}/", body, retry=False)
        except ApiError as exc:
            return created_despite(exc, self, before, request.name)
        if not (made or {}).get("success"):
            raise ApiError(f"Vast.ai did not rent offer {offer}: {(made or {}).get('msg') or made}")
        return self.pod(str(made["new_contract"]))

    def pods(self) -> list[Pod]:
        return [self._pod(i) for i in (self.client.call("GET", f"{self.base}/instances/") or {}).get("instances", [])]

    def pod(self, pod_id: str) -> Pod:
        found = (self.client.call("GET", f"{self.base}/instances/{pod_id}/") or {}).get("instances")
        if not found:  # Vast answers 200 with `instances: null` for an id that is not (or no longer) yours
            raise ApiError(f"Vast.ai has no instance {pod_id} (destroyed, or not yours); "
                           "`podvisor cloud list --provider vast` lists yours")
        return self._pod(found)

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
