"""RunPod through its REST API v2 (api.runpod.io/v2; v1 is retired): the GPU catalog with prices and
availability, templates, pods and their one lifecycle route (`POST /pods/{id}/action`), and Instant Clusters
(`/clusters`) for a job across nodes. The key goes as
`Authorization: Bearer`. The official `runpod` package is its serverless worker SDK and pulls in aiohttp, boto3,
fastapi and paramiko, so plain requests it is (through the shared provider HTTP layer).

Every request body here is one of v2's published schemas (`CreatePodRequest`, `CreateTemplateRequest`,
`UpdateTemplateRequest`, `PodActionRequest`, `CreateClusterRequest`), which refuse unknown fields by name; the
tests' stand-in checks each against a transcription of them.
"""
from __future__ import annotations

from typing import Any

from host.api import ApiError, Client, Refused
from host.keys import ApiKey
from host.pods import Cluster, Gpu, LaunchRequest, Pod, Template, created_despite
from host.settings import HostSettings

PORTS = ["22/tcp", "8888/http", "8000/http"]
HINT = ("check the key at https://www.runpod.io/console/user/settings (pods need read/write); "
        "`podvisor cloud doctor` says where it was found")
TEMPLATE_FIELDS = ("name", "image", "args", "disk", "mounts", "ports", "env", "registry", "category", "public",
                   "serverless", "startSsh", "startJupyter", "allowedCudaVersions")
"""What CreateTemplateRequest and UpdateTemplateRequest take: anything else in the repo's template is refused."""
LOG_TAIL_MAX = 5000
"""v2's most log lines in one stream's backlog (`tail`)."""
LOG_QUIET_SECONDS = 3.0
"""The backlog has been sent once the stream says nothing this long; it then only follows new lines."""


class RunPod:
    name = "runpod"
    template_file = "runpod.json"

    def __init__(self, key: ApiKey, settings: HostSettings) -> None:
        self.client = Client("RunPod", key, HINT)
        self.api = settings.runpod_api_url.rstrip("/")

    def gpus(self, min_vram: float, max_price: float | None, cloud: str | None, count: int) -> list[Gpu]:
        """The catalog with pod availability and the lowest price for `count` GPUs in `cloud` (both clouds when
        None: each offered cloud is a row of its own, so the price shown is the one the launch gets)."""
        params = {"include": "AVAILABILITY", "product": "POD", "count": str(count)}
        if cloud:
            params["cloud"] = cloud.upper()
        answer = self.client.call("GET", f"{self.api}/catalog/gpus", params=params) or {}
        out = []
        for item in answer.get("gpus", []):
            for tier in [cloud] if cloud else ["secure", "community"]:
                price = (item.get("price") or {}).get(tier)
                if not item.get(tier) or not price or (item.get("memory") or 0) < min_vram:
                    continue
                if max_price is not None and price > max_price:
                    continue
                out.append(Gpu(item["id"], item.get("name") or item["id"], item.get("memory") or 0,
                               round(float(price), 3), tier, (item.get("availability") or "unknown").lower()))
        return sorted(out, key=lambda g: g.price_per_hour)

    def templates(self, name: str | None) -> list[Template]:
        """Your own templates (RunPod's public ones are a separate catalog, never matched by name here)."""
        listed = (self.client.call("GET", f"{self.api}/templates") or {}).get("templates", [])
        found = [Template(t["id"], t.get("name", ""), t.get("image", "")) for t in listed]
        return [t for t in found if name is None or name.lower() in t.name.lower()]

    def push_template(self, spec: dict) -> tuple[str, Template]:
        body = {k: v for k, v in spec.items() if k in TEMPLATE_FIELDS}
        same = [t for t in self.templates(spec["name"]) if t.name == spec["name"]]
        if same:
            made = self.client.call("PATCH", f"{self.api}/templates/{same[0].id}", body)
            action = "updated"
        else:
            made = self.client.call("POST", f"{self.api}/templates", body)
            action = "created"
        return action, Template(made["id"], made.get("name", spec["name"]), made.get("image", spec["image"]))

    def launch(self, request: LaunchRequest) -> Pod:
        """A pod on `request.gpu`, in the cloud asked for (v2's default is SECURE). SSH: RunPod injects the
        account's registered keys as PUBLIC_KEY (startSsh), and 22/tcp is exposed for the direct address."""
        body: dict[str, Any] = {"name": request.name, "gpu": {"id": request.gpu, "count": request.count},
                                "startSsh": True}
        if request.template is not None:
            body["templateId"] = request.template.id
        else:
            body.update(image=request.image, ports=PORTS)
        if request.cloud:
            body["cloud"] = request.cloud.upper()
        if request.env:
            body["env"] = request.env
        if request.volume_gb is not None:
            body["mounts"] = {"persistent": {"size": request.volume_gb, "path": "/workspace"}}
        before = {pod.id for pod in self.pods()}
        try:  # a POST, never retried by the HTTP layer
            return self._pod(self.client.call("POST", f"{self.api}/pods", body))
        except ApiError as exc:
            if isinstance(exc, Refused):
                raise
            return created_despite(exc, self, before, request.name)

    def launch_cluster(self, request: LaunchRequest, nodes: int) -> Cluster:
        """An Instant Cluster of `nodes` pods with `request.count` GPUs each (v2's CreateClusterRequest, type
        TRAINING): every node gets the cluster's variables (NUM_NODES, NODE_RANK, PRIMARY_ADDR ...) from which its
        job joins the rendezvous. The request takes no template id, so a template's image, ports, env and disk go
        as its contents."""
        body: dict[str, Any] = {"name": request.name, "type": "TRAINING", "startSsh": True,
                                "compute": {"gpuTypeId": request.gpu, "gpuCountPerPod": request.count,
                                            "podCount": nodes}}
        if request.template is not None:
            body.update(self._template_contents(request.template.id))
        else:
            body.update(image=request.image, ports=PORTS)
        if request.env:
            body["env"] = {**body.get("env", {}), **request.env}
        if request.volume_gb is not None:
            body["mounts"] = {"persistent": {"size": request.volume_gb, "path": "/workspace"}}
        before = {cluster.id for cluster in self.clusters()}
        try:  # a POST, never retried by the HTTP layer
            made = self.client.call("POST", f"{self.api}/clusters", body)
        except ApiError as exc:
            if isinstance(exc, Refused):
                raise
            new = [c for c in self.clusters() if c.id not in before and c.name == request.name]
            if len(new) != 1:
                raise RuntimeError(f"{exc}; no new cluster named {request.name!r} is listed, so none was made "
                                   "(`podvisor cloud list --provider runpod` to be sure)") from None
            made = {"id": new[0].id}
        return self.cluster(made["id"])

    def _template_contents(self, template_id: str) -> dict[str, Any]:
        listed = (self.client.call("GET", f"{self.api}/templates") or {}).get("templates", [])
        found = next(t for t in listed if t["id"] == template_id)
        return {key: found[key] for key in ("image", "ports", "env", "args", "disk") if found.get(key)}

    def clusters(self) -> list[Cluster]:
        listed = (self.client.call("GET", f"{self.api}/clusters") or {}).get("clusters", [])
        return [Cluster(c["id"], c.get("name", ""), int((c.get("pods") or {}).get("total", 0)), []) for c in listed]

    def cluster(self, cluster_id: str) -> Cluster:
        """The cluster and its pods, in rank order (the primary, rank 0, first)."""
        raw = self.client.call("GET", f"{self.api}/clusters/{cluster_id}")
        pods = (self.client.call("GET", f"{self.api}/clusters/{cluster_id}/pods") or {}).get("pods", [])
        ranked = sorted(pods, key=lambda p: ((p.get("cluster") or {}).get("rank") is None,
                                              (p.get("cluster") or {}).get("rank") or 0))
        return Cluster(raw["id"], raw.get("name", ""), int(raw["compute"]["podCount"]), [self._pod(p) for p in ranked])

    def terminate_cluster(self, cluster_id: str) -> None:
        self.client.call("DELETE", f"{self.api}/clusters/{cluster_id}")

    def pods(self) -> list[Pod]:
        return [self._pod(p) for p in (self.client.call("GET", f"{self.api}/pods") or {}).get("pods", [])]

    def pod(self, pod_id: str) -> Pod:
        return self._pod(self.client.call("GET", f"{self.api}/pods/{pod_id}"))

    def stop(self, pod_id: str) -> None:
        self.client.call("POST", f"{self.api}/pods/{pod_id}/action", {"action": "stop"})

    def terminate(self, pod_id: str) -> None:
        self.client.call("DELETE", f"{self.api}/pods/{pod_id}")

    def check_key(self) -> str:
        listed = (self.client.call("GET", f"{self.api}/pods") or {}).get("pods", [])
        return f"GET /v2/pods accepted it ({len(listed)} pod(s))"

    def logs(self, pod_id: str, lines: int) -> list[str]:
        """The container's last `lines` log lines from v2's log stream (Server-Sent Events), for a pod whose
        SSH does not answer: the backlog, read until the stream goes quiet."""
        params = {"source": "container", "tail": str(min(max(lines, 0), LOG_TAIL_MAX))}
        events = self.client.events(f"{self.api}/pods/{pod_id}/logs", params, quiet=LOG_QUIET_SECONDS)
        return [event.get("line", "") for event in events][-lines:]

    @staticmethod
    def _pod(raw: dict) -> Pod:
        """v2's Pod: the direct SSH address (a public IP and the port mapped to 22) once the pod has one, or why
        a running pod never will (its 22/tcp published with no public address: a community host without a
        public IP, reachable only through RunPod's proxy, which carries an interactive shell and nothing else)."""
        direct = (raw.get("ssh") or {}).get("direct") or {}
        pod_id = raw["id"]
        urls = {"jupyter": f"https://{pod_id}-8888.proxy.runpod.net/lab", "api": f"https://{pod_id}-8000.proxy.runpod.net/"}
        price = raw.get("cost")
        ssh_port = [p for p in ((raw.get("runtime") or {}).get("ports") or []) if p.get("private") == 22]
        unreachable = None
        if raw.get("status") == "RUNNING" and not direct and ssh_port and not (ssh_port[0].get("public")
                                                                                and ssh_port[0].get("ip")):
            proxy = ((raw.get("ssh") or {}).get("proxy") or {}).get("command")
            unreachable = (f"RunPod gave pod {pod_id} no public address for 22/tcp (a {raw.get('cloud', '').lower()} "
                           "host without a public IP), so podvisor cannot reach it" +
                           (f"; RunPod's proxy gives an interactive shell only: {proxy}" if proxy else "") +
                           f". `podvisor cloud stop {pod_id}`, then launch with --cloud secure")
        member = raw.get("cluster") or {}
        return Pod(pod_id, raw.get("name") or "", raw.get("status") or "UNKNOWN", (raw.get("gpu") or {}).get("id", ""),
                   float(price) if price not in (None, "") else None, direct.get("host") or None,
                   int(direct["port"]) if direct.get("port") else None, urls, unreachable,
                   f"{member['id']} rank {member.get('rank')}" if member.get("id") else None)
