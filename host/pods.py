"""What both providers are reduced to: a GPU offer, a template and a pod with its SSH address. Commands work on
these, so `list`, `ssh` and the launch wait read the same on RunPod and Vast."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol
from collections.abc import Callable


@dataclass(frozen=True)
class Gpu:
    id: str
    name: str
    vram_gb: float
    price_per_hour: float
    cloud: str
    available: str


@dataclass(frozen=True)
class Template:
    id: str
    name: str
    image: str


@dataclass(frozen=True)
class Pod:
    id: str
    name: str
    status: str
    gpu: str
    price_per_hour: float | None
    ssh_host: str | None
    ssh_port: int | None
    urls: dict[str, str] = field(default_factory=dict)
    unreachable: str | None = None
    """Why this running pod will never get a direct SSH address (a RunPod community host with no public IP)."""
    cluster: str | None = None
    """The cluster it is a node of and its rank there (RunPod Instant Clusters), e.g. "clu1 rank 0"."""

    @property
    def running(self) -> bool:
        return self.status.upper() == "RUNNING"

    @property
    def gone(self) -> bool:
        """Stopped, deleted or failed: waiting on it will not bring it up (UNKNOWN is Vast's word for an instance
        whose host lost contact)."""
        return self.status.upper() in ("TERMINATED", "ERROR", "EXITED", "STOPPED", "OFFLINE", "UNKNOWN")

    def as_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Cluster:
    """Pods launched together as the nodes of one training cluster, in rank order."""

    id: str
    name: str
    size: int
    pods: list[Pod]

    def as_json(self) -> dict:
        return {"id": self.id, "name": self.name, "nodes": self.size, "pods": [pod.as_json() for pod in self.pods]}


@dataclass(frozen=True)
class LaunchRequest:
    gpu: str | None
    gpu_checked: bool
    """False when the GPU id was taken as given (RunPod's listing refused the key)."""
    count: int
    cloud: str | None
    template: Template | None
    image: str | None
    env: dict[str, str]
    volume_gb: int | None
    name: str
    max_price: float | None = None


class Provider(Protocol):
    name: str
    template_file: str
    """Our template for this provider, in the package's templates/ (deploy/<provider>/template.json)."""

    def gpus(self, min_vram: float, max_price: float | None, cloud: str | None, count: int) -> list[Gpu]: ...
    def templates(self, name: str | None) -> list[Template]: ...
    def push_template(self, spec: dict) -> tuple[str, Template]: ...
    def launch(self, request: LaunchRequest) -> Pod: ...
    def pods(self) -> list[Pod]: ...
    def pod(self, pod_id: str) -> Pod: ...
    def stop(self, pod_id: str) -> None: ...
    def terminate(self, pod_id: str) -> None: ...
    def check_key(self) -> str: ...
    @property
    def logs(self) -> Callable[[str, int], list[str]] | None:
        """The container's last lines from the provider's API (pod id, lines), for when SSH does not answer; None
        where the provider has no such call podvisor uses."""


def created_despite(error: Exception, provider: Provider, before: set[str], name: str) -> Pod:
    """After a create whose answer was lost (a gateway that timed out once the work was done): the one new pod
    named `name` is the one it made. A create is never sent twice, which could rent two; none listed means none
    was made, and the error stands."""
    new = [pod for pod in provider.pods() if pod.id not in before and pod.name == name]
    if len(new) == 1:
        return new[0]
    raise RuntimeError(f"{error}; no new pod named {name!r} is listed, so none was made "
                       f"(`podvisor cloud list --provider {provider.name}` to be sure)") from None

