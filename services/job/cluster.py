"""Which node of which training cluster this pod is, from the variables each platform already injects, so the job
joins torchrun's own c10d rendezvous: podvisor writes no scheduler and no rendezvous of its own.

The platform's variables are read first: RunPod Instant Clusters (NUM_NODES, NODE_RANK, PRIMARY_ADDR,
PRIMARY_PORT; inter-node traffic on ens1, never the management eth0, as RunPod's configuration reference says),
Kubeflow's PyTorchJob (PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT) or SkyPilot
(SKYPILOT_NUM_NODES, SKYPILOT_NODE_RANK, SKYPILOT_NODE_IPS whose first line is the head). A Kubernetes indexed Job
gives only JOB_COMPLETION_INDEX, the rank: its manifest sets JOB_NNODES and JOB_MASTER_ADDR (rank 0's name under
the headless Service). JOB_NNODES, JOB_NODE_RANK, JOB_MASTER_ADDR and JOB_MASTER_PORT win, value by value. GPUs
per node are this node's own count (JOB_NPROC=auto), not what the platform says.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.job.settings import JobSettings

DEFAULT_PORT = 29500
"""torchrun's own default rendezvous port."""
RUNPOD_CLUSTER_INTERFACE = "ens1"
"""The interface PRIMARY_ADDR is on in a RunPod Instant Cluster; eth0 there is the management network."""


class ClusterError(ValueError):
    """Variables that contradict each other: `variable` is the one to fix, and the message says how."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable, self.message = variable, message


@dataclass(frozen=True)
class Cluster:
    nodes: int
    rank: int
    master_addr: str
    master_port: int
    source: str
    """Where it was read from: runpod, pytorchjob, skypilot, indexed-job, job (JOB_* alone), or single."""
    interface: str = ""
    """The network interface inter-node traffic must use, where the platform names one."""

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1

    @property
    def endpoint(self) -> str:
        return f"{self.master_addr}:{self.master_port}"


SINGLE = Cluster(nodes=1, rank=0, master_addr="", master_port=DEFAULT_PORT, source="single")


def _int(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ClusterError(name, f"{raw[:40]!r} is not a whole number; expected e.g. 2") from None


def _platform(environ: Mapping[str, str]) -> Cluster | None:
    """The cluster a platform describes in `environ`, or None where none does."""
    if environ.get("NUM_NODES") and environ.get("PRIMARY_ADDR", environ.get("MASTER_ADDR")):
        return Cluster(_int(environ, "NUM_NODES") or 1, _int(environ, "NODE_RANK") or 0,
                       environ.get("PRIMARY_ADDR") or environ["MASTER_ADDR"],
                       _int(environ, "PRIMARY_PORT") or _int(environ, "MASTER_PORT") or DEFAULT_PORT, "runpod",
                       RUNPOD_CLUSTER_INTERFACE)
    if environ.get("PET_NNODES"):
        nodes = environ["PET_NNODES"].split(":")[-1]  # elastic jobs give MIN:MAX; the group is sized by MAX
        return Cluster(_int({"PET_NNODES": nodes}, "PET_NNODES") or 1, _int(environ, "PET_NODE_RANK") or 0,
                       environ.get("PET_MASTER_ADDR", ""), _int(environ, "PET_MASTER_PORT") or DEFAULT_PORT,
                       "pytorchjob")
    if environ.get("SKYPILOT_NUM_NODES"):
        ips = environ.get("SKYPILOT_NODE_IPS", "").split()
        return Cluster(_int(environ, "SKYPILOT_NUM_NODES") or 1, _int(environ, "SKYPILOT_NODE_RANK") or 0,
                       ips[0] if ips else "", DEFAULT_PORT, "skypilot")
    return None


def detect(settings: JobSettings, environ: Mapping[str, str]) -> Cluster:
    """This node's place in its cluster; JOB_* values win over the platform's, value by value. Raises
    ClusterError naming the variable when they contradict each other (a rank outside the cluster, several nodes
    and nowhere to meet)."""
    found = _platform(environ)
    if found is None:
        index = _int(environ, "JOB_COMPLETION_INDEX")
        explicit = settings.job_nnodes is not None or settings.job_node_rank is not None or settings.job_master_addr
        found = SINGLE if index is None else Cluster(1, index, "", DEFAULT_PORT, "indexed-job")
        if found is SINGLE and explicit:
            found = Cluster(1, 0, "", DEFAULT_PORT, "job")
    cluster = Cluster(nodes=settings.job_nnodes if settings.job_nnodes is not None else found.nodes,
                      rank=settings.job_node_rank if settings.job_node_rank is not None else found.rank,
                      master_addr=settings.job_master_addr or found.master_addr,
                      master_port=settings.job_master_port or found.master_port, source=found.source,
                      interface=found.interface)
    nodes_from = "JOB_NNODES" if settings.job_nnodes is not None else _variable(cluster.source, "nodes")
    rank_from = "JOB_NODE_RANK" if settings.job_node_rank is not None else _variable(cluster.source, "rank")
    if not 0 <= cluster.rank < cluster.nodes:
        raise ClusterError(rank_from, f"rank {cluster.rank} is outside a cluster of {cluster.nodes} node(s) "
                                      f"({nodes_from}); expected 0 to {cluster.nodes - 1}, or {nodes_from} set to "
                                      "the number of nodes")
    if cluster.multi_node and not cluster.master_addr:
        raise ClusterError("JOB_MASTER_ADDR", f"{cluster.nodes} nodes ({nodes_from}) but no address of rank 0 to "
                                              "meet at; expected the address or DNS name of node 0 (on Kubernetes: "
                                              "<job>-0.<headless service>)")
    return cluster


def _variable(source: str, what: str) -> str:
    """The platform variable a value was read from, for an error that names it."""
    return {("runpod", "nodes"): "NUM_NODES", ("runpod", "rank"): "NODE_RANK",
            ("pytorchjob", "nodes"): "PET_NNODES", ("pytorchjob", "rank"): "PET_NODE_RANK",
            ("skypilot", "nodes"): "SKYPILOT_NUM_NODES", ("skypilot", "rank"): "SKYPILOT_NODE_RANK",
            ("indexed-job", "rank"): "JOB_COMPLETION_INDEX"}.get((source, what),
                                                                  "JOB_NNODES" if what == "nodes" else "JOB_NODE_RANK")
