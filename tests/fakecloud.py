"""RunPod's and Vast.ai's control APIs as loopback stand-ins with state: GPU listings, templates, and pods that
come up a few polls after they are created, at an SSH address the test chooses (a real sshd on loopback, or a
closed port). Shapes follow the documented APIs: RunPod REST v2 (checked against its published schemas);
Vast `/bundles/`, `/asks/{id}/`, `/instances/`, `/template/`. Every request is recorded by FakeApi."""
from __future__ import annotations

import json
import os
import re
import subprocess
from typing import Any
from urllib.parse import parse_qs, urlsplit

from contract import runpod_problems, runpod_query_problems, vast_problems
from fakeapi import FakeApi

KEY = "rpa_FAKEKEY0123456789abcdef"
PORTS = ["22/tcp", "8888/http", "8000/http"]


class FakeRunPod(FakeApi):
    """RunPod's REST API v2: every request body and query is checked against the published schemas (contract.py)
    and refused with v2's RFC 9457 problem when they would refuse it; every answer is checked the same way."""

    GPUS = [  # GpuType, as GET /v2/catalog/gpus?include=AVAILABILITY&product=POD answers
        {"id": "NVIDIA GeForce RTX 4090", "name": "RTX 4090", "pool": "ADA_24", "manufacturer": "NVIDIA",
         "memory": 24, "secure": True, "community": True, "price": {"secure": 0.69, "community": 0.34},
         "maxCount": {"secure": 8, "community": 8}, "availability": "HIGH"},
        {"id": "NVIDIA A100 80GB PCIe", "name": "A100 PCIe", "pool": "AMPERE_80", "manufacturer": "NVIDIA",
         "memory": 80, "secure": True, "community": False, "price": {"secure": 1.64, "community": 0},
         "maxCount": {"secure": 8, "community": 0}, "availability": "LOW"},
        {"id": "NVIDIA GeForce RTX 3090", "name": "RTX 3090", "pool": "AMPERE_24", "manufacturer": "NVIDIA",
         "memory": 24, "secure": False, "community": True, "price": {"secure": 0, "community": 0.22},
         "maxCount": {"secure": 0, "community": 4}, "availability": "MEDIUM"},
        {"id": "NVIDIA H100 80GB HBM3", "name": "H100 SXM", "pool": "HOPPER_141", "manufacturer": "NVIDIA",
         "memory": 80, "secure": True, "community": False, "price": {"secure": 0, "community": 0},
         "maxCount": {"secure": 0, "community": 0}, "availability": "NONE"},
    ]

    def __init__(self, key: str = KEY, ssh_port: int = 0, ssh_host: str = "127.0.0.1", polls_before_up: int = 1) -> None:
        self.key, self.ssh_host, self.ssh_port, self.polls_before_up = key, ssh_host, ssh_port, polls_before_up
        self.catalog_status = 200
        self.pods: dict[str, dict] = {}
        self.templates: dict[str, dict] = {}
        self.clusters: dict[str, dict] = {}
        self.refused: list[str] = []
        """Why the stand-in refused a request as v2 would: a test that expects none asserts this is empty."""
        self.public_ip = True
        """False: pods come up as a community host without a public IP does (22/tcp with no public address)."""
        self.create_fails_with: int | None = None
        """A status the next create answers although it created (a gateway timing out after the work)."""
        self.log_lines = [f"container line {i}" for i in range(1, 6)]
        super().__init__(answer=self.route)
        self.env = {"RUNPOD_API_URL": f"{self.url}/v2", "RUNPOD_API_KEY": key}

    @staticmethod
    def problem(status: int, title: str, detail: str, errors: list[str] | None = None) -> tuple[int, dict]:
        body = {"title": title, "status": status, "detail": detail, **({"errors": errors} if errors else {})}
        assert not runpod_problems("ErrorResponse", body)
        return status, body

    def refuse(self, schema: str, value: Any) -> tuple[int, dict] | None:
        problems = runpod_problems(schema, value)
        if problems:
            self.refused += problems
            return self.problem(400, "Bad Request", f"the body is not a valid {schema}", problems)
        return None

    def checked(self, schema: str, value: Any) -> Any:
        assert not runpod_problems(schema, value), (schema, runpod_problems(schema, value))
        return value

    def route(self, request: dict) -> tuple[int, Any]:
        if request["headers"].get("Authorization") != f"Bearer {self.key}":
            return self.problem(401, "Unauthorized", "invalid API key")
        method, url, body = request["method"], urlsplit(request["path"]), request["body"]
        path, query = url.path, parse_qs(url.query)
        if path == "/v2/catalog/gpus" and method == "GET":
            problems = runpod_query_problems(["CatalogIncludeParam", "GpuProductFilter", "GpuCountFilter",
                                              "GpuCloudFilter"], query)
            if problems:
                self.refused += problems
                return self.problem(400, "Bad Request", "invalid query", problems)
            if self.catalog_status != 200:
                return self.problem(self.catalog_status, "Forbidden", "this key may not read the catalog")
            cloud = (query.get("cloud") or [""])[0].lower()
            gpus = [g for g in self.GPUS if not cloud or g[cloud]]
            return 200, self.checked("ListGpuTypesResponse", {"gpus": gpus})
        if path == "/v2/templates":
            if method == "POST":
                if refused := self.refuse("CreateTemplateRequest", body):
                    return refused
                made = self.template({**body, "id": f"tpl{len(self.templates) + 1}"})
                self.templates[made["id"]] = made
                return 201, self.checked("Template", made)
            return 200, self.checked("ListTemplatesResponse", {"templates": list(self.templates.values())})
        if m := re.fullmatch(r"/v2/templates/(\w+)", path):
            if refused := self.refuse("UpdateTemplateRequest", body):
                return refused
            self.templates[m[1]].update(body)
            return 200, self.checked("Template", self.templates[m[1]])
        if path == "/v2/pods":
            if method == "POST":
                if refused := self.refuse("CreatePodRequest", body):
                    return refused
                pod = self.pod({"id": f"pod{len(self.pods) + 1}x7k2", "name": body["name"], "status": "RUNNING",
                                "image": body.get("image", ""), "gpu": body["gpu"],
                                "cloud": body.get("cloud", "SECURE"), "polls": 0})
                self.pods[pod["id"]] = pod
                if self.create_fails_with:
                    status, self.create_fails_with = self.create_fails_with, None
                    return self.problem(status, "Gateway Timeout", "upstream timed out")
                return 201, self.checked("Pod", self.view(pod))
            return 200, self.checked("ListPodsResponse", {"pods": [self.view(p) for p in self.pods.values()]})
        if path == "/v2/clusters":
            if method == "POST":
                if refused := self.refuse("CreateClusterRequest", body):
                    return refused
                return 201, self.checked("Cluster", self.view_cluster(self.create_cluster(body)))
            return 200, self.checked("ListClustersResponse",
                                     {"clusters": [self.view_cluster(c) for c in self.clusters.values()]})
        if m := re.fullmatch(r"/v2/clusters/(\w+)(/pods)?", path):
            cluster = self.clusters.get(m[1])
            if cluster is None:
                return self.problem(404, "Not Found", "The requested cluster does not exist.")
            if method == "DELETE":
                for pod_id in cluster["pod_ids"]:
                    self.pods.pop(pod_id, None)
                del self.clusters[m[1]]
                return 204, None
            if m[2]:
                return 200, self.checked("ListPodsResponse", {"pods": [self.view(self.pods[i]) for i in cluster["pod_ids"]
                                                                        if i in self.pods]})
            return 200, self.checked("Cluster", self.view_cluster(cluster))
        if m := re.fullmatch(r"/v2/pods/(\w+)/logs", path):
            problems = runpod_query_problems(["LogSourceParam", "LogTail"], query)
            if problems or m[1] not in self.pods:
                self.refused += problems
                return self.problem(400 if problems else 404, "Bad Request" if problems else "Not Found",
                                    "; ".join(problems) or "The requested Pod does not exist.")
            tail = int((query.get("tail") or ["100"])[0])
            return 200, "".join(f"id: 2026-12-02T10:00:0{i}Z/{i:012d}\ndata: " + json.dumps(
                {"ts": f"2026-12-02T10:00:0{i}Z", "source": "container", "line": line}) + "\n\n"
                for i, line in enumerate(self.log_lines[-tail:])).encode()
        if m := re.fullmatch(r"/v2/pods/(\w+)(/action)?", path):
            pod = self.pods.get(m[1])
            if pod is None:
                return self.problem(404, "Not Found", "The requested Pod does not exist.")
            if method == "DELETE":
                del self.pods[m[1]]
                return 204, None
            if m[2]:
                if refused := self.refuse("PodActionRequest", body):
                    return refused
                if body["action"] not in pod["actions"]:
                    return self.problem(409, "Conflict", f"action {body['action']} is not valid for a "
                                                         f"{pod['status']} pod")
                if body["action"] == "terminate":
                    del self.pods[m[1]]
                    return 204, None
                pod.update(status="EXITED", actions=["start", "terminate"], ssh={"proxy": None, "direct": None})
                return 200, self.checked("Pod", self.view(pod))
            pod["polls"] += 1
            if pod["polls"] > self.polls_before_up and pod["status"] == "RUNNING":
                public = self.ssh_port if self.public_ip else None
                pod["runtime"] = {"uptime": 10, "ports": [{"private": 22, "public": public, "type": "tcp",
                                                           "ip": self.ssh_host if self.public_ip else None}]}
                pod["ssh"]["proxy"] = {"host": "ssh.runpod.io", "port": 22, "username": f"{pod['id']}-64411eb2",
                                       "command": f"ssh {pod['id']}-64411eb2@ssh.runpod.io"}
                if self.public_ip:
                    pod["ssh"]["direct"] = {"host": self.ssh_host, "port": self.ssh_port, "username": "root",
                                            "command": f"ssh root@{self.ssh_host} -p {self.ssh_port}"}
            return 200, self.checked("Pod", self.view(pod))
        return self.problem(404, "Not Found", f"no route {method} {path}")

    def create_cluster(self, body: dict) -> dict:
        """An Instant Cluster: its pods are made at once, each with its rank and address on the cluster network,
        and come up as any pod does."""
        cluster_id = f"clu{len(self.clusters) + 1}"
        compute = body["compute"]
        pod_ids = []
        for rank in range(compute["podCount"]):
            pod = self.pod({"id": f"{cluster_id}n{rank}x7k2", "name": f"{body['name']}-{rank}", "status": "RUNNING",
                            "image": body.get("image", ""), "env": body.get("env", {}), "cloud": "SECURE",
                            "gpu": {"id": compute["gpuTypeId"], "count": compute["gpuCountPerPod"]},
                            "cluster": {"id": cluster_id, "rank": rank, "ip": f"10.65.0.{rank + 2}"}, "polls": 0})
            self.pods[pod["id"]] = pod
            pod_ids.append(pod["id"])
        self.clusters[cluster_id] = {"id": cluster_id, "name": body["name"], "type": body["type"], "compute": compute,
                                     "createdAt": "2026-12-02T10:00:00Z", "pod_ids": pod_ids}
        return self.clusters[cluster_id]

    def view_cluster(self, cluster: dict) -> dict:
        statuses = [self.pods[i]["status"] for i in cluster["pod_ids"] if i in self.pods]
        view = {**{k: v for k, v in cluster.items() if k != "pod_ids"},
                "pods": {"total": len(statuses), "byStatus": {s: statuses.count(s) for s in set(statuses)}}}
        if statuses:
            view["primary"] = {"podId": cluster["pod_ids"][0], "status": statuses[0]}
        return view

    @staticmethod
    def template(fields: dict) -> dict:
        """A Template with every field v2 returns, the request's values over the defaults."""
        return {"args": "", "disk": 20, "mounts": {}, "ports": [], "env": {}, "registry": None, "serverless": False,
                "public": False, "category": "NVIDIA", "startSsh": False, "startJupyter": False,
                "allowedCudaVersions": [], **fields}

    @staticmethod
    def pod(fields: dict) -> dict:
        """A Pod with every field v2 returns; no SSH address until a few polls after it is created."""
        return {"actions": ["stop", "restart", "terminate"], "args": "", "disk": 50, "mounts": {}, "ports": PORTS,
                "env": {}, "registry": None, "dataCenterId": "US-KS-2", "cudaVersion": "12.8",
                "ssh": {"proxy": None, "direct": None}, "template": None, "cost": 0.69, "locked": False,
                "runtime": None, "createdAt": "2026-12-02T10:00:00Z", "startedAt": None,
                "globalNetworking": {"enabled": False}, **fields}

    @staticmethod
    def view(pod: dict) -> dict:
        return {k: v for k, v in pod.items() if k != "polls"}


class FakeVast(FakeApi):
    """Vast's API v0 as its official client (vast-ai/vast-cli) speaks it: the offer search filters on the query's
    fields in Vast's units (gpu_ram in MB of 1000) and prices the allocated storage into dph_total; the template
    search covers everyone's public templates unless the query names a creator; an unknown instance id answers
    200 with `instances: null`."""

    ME = 7
    OFFERS = [  # base $/h of the machine, and $/GB/month of its disk (Vast's storage_cost)
        {"id": 9001, "gpu_name": "RTX 4090", "num_gpus": 1, "gpu_ram": 24564, "dph_base": 0.38, "storage_cost": 0.15,
         "disk_space": 500, "geolocation": "Norway, NO", "reliability2": 0.998, "datacenter": False},
        {"id": 9002, "gpu_name": "RTX 4090", "num_gpus": 1, "gpu_ram": 24564, "dph_base": 0.32, "storage_cost": 0.20,
         "disk_space": 200, "geolocation": "Texas, US", "reliability2": 0.991, "datacenter": True},
        {"id": 9003, "gpu_name": "A100 SXM4", "num_gpus": 1, "gpu_ram": 81920, "dph_base": 1.05, "storage_cost": 0.30,
         "disk_space": 1000, "geolocation": "Quebec, CA", "reliability2": 0.999, "datacenter": True},
        {"id": 9004, "gpu_name": "H100 SXM", "num_gpus": 1, "gpu_ram": 81559, "dph_base": 1.90, "storage_cost": 0.30,
         "disk_space": 1000, "geolocation": "Oregon, US", "reliability2": 0.999, "datacenter": True},
        {"id": 9005, "gpu_name": "RTX 4090", "num_gpus": 1, "gpu_ram": 24564, "dph_base": 0.25, "storage_cost": 0.10,
         "disk_space": 40, "geolocation": "Ohio, US", "reliability2": 0.995, "datacenter": False},
    ]

    def __init__(self, key: str = KEY, ssh_port: int = 0, ssh_host: str = "127.0.0.1", polls_before_up: int = 1) -> None:
        self.key, self.ssh_host, self.ssh_port, self.polls_before_up = key, ssh_host, ssh_port, polls_before_up
        self.instances: dict[str, dict] = {}
        self.templates: dict[str, dict] = {  # a stranger's public template that happens to share our name
            "hstranger": {"id": 1, "hash_id": "hstranger", "name": "podvisor", "image": "someone/else", "tag": "1",
                          "creator_id": 4040, "private": False}}
        self.refused: list[str] = []
        """Why the stand-in refused a request as Vast's published schema would."""
        self.comes_up_as = "running"
        """The status a loading instance turns into (Vast says `unknown` when the host lost contact)."""
        self.rent_fails_with: int | None = None
        """A status the next rent answers although it rented (a gateway timing out after the work was done)."""
        super().__init__(answer=self.route)
        self.env = {"VAST_API_URL": f"{self.url}/api/v0", "VAST_API_KEY": key}

    @staticmethod
    def matches(value: Any, condition: Any) -> bool:
        ops = {"eq": lambda a, b: a == b, "gte": lambda a, b: a >= b, "lte": lambda a, b: a <= b,
               "gt": lambda a, b: a > b, "lt": lambda a, b: a < b}
        return all(ops[op](value, want) for op, want in condition.items() if op in ops)

    def offers(self, query: dict) -> list[dict]:
        storage = float(query.get("allocated_storage") or 0)
        priced = [{**{k: v for k, v in o.items() if k not in ("dph_base", "storage_cost")},
                   "dph_total": round(o["dph_base"] + o["storage_cost"] * storage / (30 * 24), 4)}
                  for o in self.OFFERS]
        fields = ("gpu_name", "gpu_ram", "dph_total", "disk_space", "datacenter", "num_gpus")
        return sorted((o for o in priced if all(self.matches(o[f], query[f]) for f in fields if f in query)),
                      key=lambda o: o["dph_total"])

    CONTRACT = {("POST", "/api/v0/bundles/"): "OfferQuery", ("POST", "/api/v0/template/"): "TemplateCreate",
                ("PUT", "/api/v0/template/"): "TemplateUpdate"}
    """Which published request schema (contract.py) each call's body is checked against."""

    def contract(self, method: str, path: str) -> str | None:
        if method == "PUT" and re.fullmatch(r"/api/v0/asks/\d+/", path):
            return "RentRequest"
        if method == "PUT" and re.fullmatch(r"/api/v0/instances/\d+/", path):
            return "InstanceUpdate"
        return self.CONTRACT.get((method, path))

    def route(self, request: dict) -> tuple[int, Any]:
        if request["headers"].get("Authorization") != f"Bearer {self.key}":
            return 401, {"success": False, "error": "invalid_user", "msg": "bad api key"}
        method, url, body = request["method"], urlsplit(request["path"]), request["body"]
        path = url.path
        schema = self.contract(method, path)
        if schema and (problems := vast_problems(schema, body)):
            self.refused += problems
            return 400, {"success": False, "error": "invalid_args", "msg": "; ".join(problems)}
        if path == "/api/v0/users/current/":
            return 200, {"id": self.ME, "credit": 12.5}
        if path == "/api/v0/bundles/":
            return 200, {"offers": self.offers(body)}
        if path == "/api/v0/template/":
            if method == "GET":
                filters = json.loads((parse_qs(url.query).get("select_filters") or ["{}"])[0])
                return 200, {"templates": [t for t in self.templates.values()
                                           if all(self.matches(t.get(f), c) for f, c in filters.items())]}
            if method == "POST":
                made = {**body, "id": len(self.templates) + 1, "hash_id": f"h{len(self.templates):031d}",
                        "creator_id": self.ME}
                self.templates[made["hash_id"]] = made
                return 200, {"success": True, "template": {"id": made["id"], "hash_id": made["hash_id"]}}
            if self.templates[body["hash_id"]]["creator_id"] != self.ME:
                return 403, {"success": False, "error": "forbidden", "msg": "not your template"}
            self.templates[body["hash_id"]].update(body)
            return 200, {"success": True, "template": self.templates[body["hash_id"]]}
        if m := re.fullmatch(r"/api/v0/asks/(\d+)/", path):
            instance = {"id": 4242 + len(self.instances), "label": body.get("label"), "actual_status": None,
                        "gpu_name": "RTX 4090", "num_gpus": 1, "dph_total": 0.35, "public_ipaddr": None,
                        "ports": {}, "offer": int(m[1]), "polls": 0}
            self.instances[str(instance["id"])] = instance
            if self.rent_fails_with:
                status, self.rent_fails_with = self.rent_fails_with, None
                return status, {"success": False, "error": "gateway", "msg": "upstream timed out"}
            return 200, {"success": True, "new_contract": instance["id"]}
        if path == "/api/v0/instances/":
            return 200, {"instances_found": len(self.instances), "instances": [self.view(i) for i in self.instances.values()]}
        if m := re.fullmatch(r"/api/v0/instances/(\d+)/", path):
            instance = self.instances.get(m[1])
            if instance is None:
                return 200, {"instances": None}
            if method == "DELETE":
                del self.instances[m[1]]
                return 200, {"success": True}
            if method == "PUT":
                instance["actual_status"] = body["state"]
                return 200, {"success": True}
            instance["polls"] += 1
            if instance["polls"] == 1 and instance["actual_status"] is None:
                instance["actual_status"] = "loading"
            if instance["polls"] > self.polls_before_up and instance["actual_status"] == "loading":
                instance.update(actual_status=self.comes_up_as, public_ipaddr=f"{self.ssh_host}\n",
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
