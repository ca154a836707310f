"""Which node of which cluster a pod is, from each platform's own variables as its docs list them, and the
torchrun command line each one gets; contradictions are named by `podvisor config --check`."""
from __future__ import annotations

import pytest

from services.job.cluster import ClusterError, detect
from services.job.runner import command_line, job_environment
from services.job.settings import JobSettings
from test_config import _check

RUNPOD_NODE_1 = {  # RunPod Instant Clusters, configuration reference: set on every node
    "PRIMARY_ADDR": "10.65.0.2", "MASTER_ADDR": "10.65.0.2", "PRIMARY_PORT": "29400", "MASTER_PORT": "29400",
    "NODE_ADDR": "10.65.0.3", "NODE_RANK": "1", "NUM_NODES": "2", "NUM_TRAINERS": "8",
    "HOST_NODE_ADDR": "10.65.0.2:29400", "WORLD_SIZE": "16"}
PYTORCHJOB_WORKER = {  # Kubeflow training operator, for a worker of an elastic PyTorchJob
    "PET_NNODES": "2:4", "PET_NODE_RANK": "3", "PET_MASTER_ADDR": "train-master-0", "PET_MASTER_PORT": "23456",
    "PET_NPROC_PER_NODE": "1"}
SKYPILOT_NODE_1 = {"SKYPILOT_NODE_RANK": "1", "SKYPILOT_NODE_IPS": "172.31.4.10\n172.31.4.11",
                   "SKYPILOT_NUM_NODES": "2", "SKYPILOT_NUM_GPUS_PER_NODE": "4"}
INDEXED_JOB_POD_2 = {"JOB_COMPLETION_INDEX": "2"}  # the rest comes from the manifest's JOB_* env


def _settings(**env: str) -> JobSettings:
    return JobSettings(**{k.lower(): v for k, v in {"JOB_COMMAND": "python train.py --lr 3e-4", **env}.items()})


def _argv(environ: dict[str, str], gpus: int = 0, **env: str) -> list[str]:
    settings = _settings(**env)
    return command_line(settings, None, gpus, detect(settings, environ))


def _rendezvous(endpoint: str, nodes: int, rank: int, nproc: int) -> list[str]:
    return ["torchrun", f"--nnodes={nodes}", f"--node-rank={rank}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={endpoint}", f"--rdzv-id=podvisor-{endpoint.replace(':', '-')}",
            "--rdzv-conf=join_timeout=900", "--max-restarts=3", f"--nproc-per-node={nproc}", "train.py", "--lr",
            "3e-4"]


def test_each_platforms_variables_give_its_torchrun_rendezvous():
    assert _argv(RUNPOD_NODE_1, gpus=8, JOB_NPROC="auto") == _rendezvous("10.65.0.2:29400", 2, 1, 8)
    assert _argv(PYTORCHJOB_WORKER) == _rendezvous("train-master-0:23456", 4, 3, 1)
    assert _argv(SKYPILOT_NODE_1, JOB_NPROC="4") == _rendezvous("172.31.4.10:29500", 2, 1, 4)
    assert _argv(INDEXED_JOB_POD_2, JOB_NNODES="3", JOB_MASTER_ADDR="trainer-0.trainer") == _rendezvous(
        "trainer-0.trainer:29500", 3, 2, 1)
    assert _argv({}, JOB_NNODES="2", JOB_NODE_RANK="0", JOB_MASTER_ADDR="10.0.0.5", JOB_MASTER_PORT="6000") == \
        _rendezvous("10.0.0.5:6000", 2, 0, 1)


def test_without_a_cluster_the_job_runs_as_it_did_on_one_node():
    assert _argv({}) == ["python", "train.py", "--lr", "3e-4"]
    assert _argv({}, gpus=2, JOB_NPROC="auto") == ["torchrun", "--standalone", "--nproc-per-node=2", "train.py",
                                                   "--lr", "3e-4"]
    assert _argv({"JOB_COMPLETION_INDEX": "0"}) == ["python", "train.py", "--lr", "3e-4"], "a one-pod indexed Job"


def test_the_explicit_variables_win_over_the_platforms():
    cluster = detect(_settings(JOB_MASTER_PORT="7000", JOB_NNODES="3"), RUNPOD_NODE_1)
    assert (cluster.nodes, cluster.rank, cluster.endpoint, cluster.source) == (3, 1, "10.65.0.2:7000", "runpod")


def test_runpod_traffic_between_nodes_takes_the_cluster_interface_unless_the_user_chose_one():
    settings = _settings()
    cluster = detect(settings, RUNPOD_NODE_1)
    env = job_environment({"PATH": "/usr/bin"}, settings, None, 0, True, cluster=cluster)
    assert (env["NCCL_SOCKET_IFNAME"], env["GLOO_SOCKET_IFNAME"]) == ("ens1", "ens1"), "never eth0, the management"
    chosen = job_environment({"NCCL_SOCKET_IFNAME": "=ens2"}, settings, None, 0, True, cluster=cluster)
    assert chosen["NCCL_SOCKET_IFNAME"] == "=ens2"
    assert "NCCL_SOCKET_IFNAME" not in job_environment({}, settings, None, 0, True,
                                                       cluster=detect(settings, SKYPILOT_NODE_1))


@pytest.mark.parametrize(("environ", "env", "variable", "words"), [
    ({**RUNPOD_NODE_1, "NODE_RANK": "2"}, {}, "NODE_RANK", "rank 2 is outside a cluster of 2 node(s) (NUM_NODES)"),
    ({}, {"JOB_NNODES": "2", "JOB_NODE_RANK": "2", "JOB_MASTER_ADDR": "a"}, "JOB_NODE_RANK", "expected 0 to 1"),
    (INDEXED_JOB_POD_2, {"JOB_MASTER_ADDR": "trainer-0.trainer"}, "JOB_COMPLETION_INDEX",
     "JOB_NNODES set to the number of nodes"),
    ({}, {"JOB_NNODES": "2"}, "JOB_MASTER_ADDR", "2 nodes (JOB_NNODES) but no address of rank 0"),
    ({"PET_NNODES": "2", "PET_NODE_RANK": "1"}, {}, "JOB_MASTER_ADDR", "2 nodes (PET_NNODES)"),
])
def test_a_contradiction_is_named_with_its_fix(environ, env, variable, words):
    with pytest.raises(ClusterError) as raised:
        detect(_settings(**env), environ)
    assert raised.value.variable == variable and words in raised.value.message


def test_config_check_names_a_contradiction_before_any_node_starts(tmp_path):
    result = _check(tmp_path, JOB_COMMAND="python train.py", **{**RUNPOD_NODE_1, "NODE_RANK": "5"})
    assert result.returncode == 2, result.stdout
    assert "NODE_RANK: rank 5 is outside a cluster of 2 node(s) (NUM_NODES)" in result.stdout
    assert _check(tmp_path, JOB_COMMAND="python train.py", **RUNPOD_NODE_1).returncode == 0
