"""Every deploy template is in the shape its platform's API takes, maps the ports podvisor serves, names only
variables the schema knows, and passes `podvisor config --check` as shipped (no placeholder passes for a value).

Shapes, from the platforms' documentation: Vast's template API takes `env` as one string of docker flags
(`-e VAR=val -p 8000:8000`, at most 1024 characters), `runtype` ssh/jupyter/args and `recommended_disk_space`
in GB; RunPod's REST API v2 (POST /v2/templates) takes its published CreateTemplateRequest, checked here.
"""
from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import PODVISOR, base_env
from entrypoint.catalog import sections
from entrypoint.schema import env_names

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
KNOWN = {name for _, cls in sections() for f, info in cls.model_fields.items() for name in env_names(f, info)}
SERVED = {22, 8888, 8000}


def _runpod(path: Path) -> dict[str, str]:
    """RunPod REST v2's CreateTemplateRequest (published schema, tests/contracts/), plus what podvisor needs of it:
    its ports, the volume at /workspace, and startSsh, without which RunPod injects no PUBLIC_KEY."""
    from contract import runpod_problems

    template = json.loads(path.read_text())
    assert runpod_problems("CreateTemplateRequest", template) == []
    assert set(template["ports"]) == {"22/tcp", "8888/http", "8000/http"}
    assert template["mounts"]["persistent"]["path"] == "/workspace" and template["serverless"] is False
    assert template["startSsh"] is True and template["startJupyter"] is False, "podvisor runs Jupyter, with a token"
    assert not template["image"].endswith(":latest")
    return template["env"]


def _vast(path: Path) -> dict[str, str]:
    template = json.loads(path.read_text())
    assert template["runtype"] == "args", "Vast's ssh/jupyter launch modes replace the image's entrypoint"
    assert isinstance(template["env"], str) and len(template["env"]) <= 1024
    assert isinstance(template["recommended_disk_space"], int)
    assert "disk_space" not in template and "ports" not in template, "not fields of Vast's template API"
    flags = shlex.split(template["env"])
    pairs = list(zip(flags[::2], flags[1::2]))
    assert all(flag in ("-e", "-p") for flag, _ in pairs) and len(flags) % 2 == 0
    mapped = {int(value.split(":")[1].split("/")[0]) for flag, value in pairs if flag == "-p"}
    assert mapped == SERVED, "each port podvisor serves must be published, or Vast injects no VAST_TCP_PORT_N"
    return dict(value.split("=", 1) for flag, value in pairs if flag == "-e")


def _kubernetes(path: Path) -> dict[str, str]:
    import kubernetes_validate

    env: dict[str, str] = {}
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:  # the API server's own schema, strict: a misspelled field is an error, not ignored
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    headless = {d["metadata"]["name"] for d in docs if d["kind"] == "Service" and d["spec"].get("clusterIP") == "None"}
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["enableServiceLinks"] is False, "a Service named ssh/jupyter would inject SSH_PORT=tcp://..."
        assert {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v} <= claims
        if doc["kind"] == "Job":
            assert pod["restartPolicy"] == "Never"
        if doc["spec"].get("completionMode") == "Indexed":  # one pod per node, meeting at pod 0's stable name
            values = {e["name"]: e.get("value", "") for e in pod["containers"][0]["env"]}
            job, nodes = doc["metadata"]["name"], doc["spec"]["completions"]
            assert doc["spec"]["parallelism"] == nodes == int(values["JOB_NNODES"]), "every node at once"
            assert pod["subdomain"] in headless, "pod 0's name resolves only under a headless Service"
            assert values["JOB_MASTER_ADDR"] == f"{job}-0.{pod['subdomain']}"
        assert "nvidia.com/gpu.product" in pod["nodeSelector"]
        for container in pod["containers"]:
            values = {e["name"]: e.get("value", "") for e in container["env"]}
            assert pod["terminationGracePeriodSeconds"] > int(values["PODVISOR_GRACE_SECONDS"])
            assert all(e["valueFrom"]["secretKeyRef"].get("optional") is True
                       for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})), "a missing key must not stop the pod"
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), "no requests: BestEffort, evicted first"
            assert "nvidia.com/gpu" in resources["limits"]
            assert not container["image"].endswith(":latest")
            if doc["kind"] == "Deployment":
                probes = {k: container[k]["exec"]["command"][-1] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
                assert probes == {"startupProbe": "--live", "livenessProbe": "--live", "readinessProbe": "--ready"}
            env.update({k: v for k, v in values.items() if k != "POD_IP"})
    assert docs
    return env


def _skypilot(path: Path) -> dict[str, str]:
    """SkyPilot's own task schema (tests/contracts/), the task and its resources as `sky launch` checks them."""
    from jsonschema import Draft7Validator

    contract = json.loads((Path(__file__).parent / "contracts" / "skypilot-task.json").read_text())
    task = yaml.safe_load(path.read_text())
    for schema, value in ((contract["task"], task), (contract["resources"], task["resources"])):
        problems = [f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message}"
                    for e in Draft7Validator(schema).iter_errors(value)]
        assert problems == [], problems
    assert task["num_nodes"] > 1 and task["resources"]["image_id"].startswith("docker:")
    assert "podvisor start" in task["run"]
    return {name: str(value) for name, value in task["envs"].items()}


TEMPLATES = [(DEPLOY / "runpod" / "template.json", _runpod), (DEPLOY / "vast" / "template.json", _vast),
             (DEPLOY / "kubernetes" / "deployment.yaml", _kubernetes), (DEPLOY / "kubernetes" / "job.yaml", _kubernetes),
             (DEPLOY / "kubernetes" / "multinode.yaml", _kubernetes), (DEPLOY / "skypilot" / "task.yaml", _skypilot)]


@pytest.mark.parametrize(("path", "reader"), TEMPLATES, ids=lambda v: getattr(v, "name", ""))
def test_template_has_its_platforms_shape_and_passes_the_config_check(path, reader, tmp_path):
    env = reader(path)
    assert env, f"{path} sets no variables"
    unknown = sorted(set(env) - KNOWN)
    assert not unknown, f"{path.relative_to(DEPLOY)} names variables the schema does not know: {unknown}"
    check = subprocess.run([PODVISOR, "config", "--check"], env=base_env(tmp_path / "state", **env),
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize(("variable", "value"), [
    ("JUPYTER_TOKEN", "set-a-long-random-token"), ("INFERENCE_API_TOKEN", "changeme"),
    ("UPLOAD_DESTINATIONS", "s3://your-bucket/checkpoints"), ("UPLOAD_DESTINATIONS", "hf://your-name/checkpoints"),
    ("HF_TOKEN", "{{ RUNPOD_SECRET_hf_token }}"), ("JUPYTER_PASSWORD", "password"),
])
def test_placeholders_and_known_tokens_are_errors_that_never_echo_the_value(variable, value, tmp_path):
    check = subprocess.run([PODVISOR, "config", "--check"], env=base_env(tmp_path / "state", **{variable: value}),
                           capture_output=True, text=True)
    assert check.returncode == 2
    assert f"{variable}: holds a template placeholder" in check.stdout
    if variable != "UPLOAD_DESTINATIONS":
        assert value not in check.stdout + check.stderr


def test_every_template_is_checked():
    found = {p for p in DEPLOY.rglob("*") if p.suffix in (".json", ".yaml", ".yml")}
    assert found == {path for path, _ in TEMPLATES}


def test_the_images_base_names_its_registry():
    """podman (and docker without a default registry) refuse a short name: `make image` failed under podman."""
    import re

    dockerfile = (Path(__file__).resolve().parent.parent / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.M).group(1)
    registry = base.split("/", 1)[0]
    assert "." in registry or ":" in registry or registry == "localhost", f"{base} names no registry"


def test_the_schema_checks_refuse_a_misspelled_field(tmp_path):
    """The validators above are not vacuous: one wrong key in the shipped manifests fails them."""
    manifest = (DEPLOY / "kubernetes" / "multinode.yaml").read_text()
    broken = tmp_path / "multinode.yaml"
    broken.write_text(manifest.replace("completionMode: Indexed", "completionsMode: Indexed"))
    with pytest.raises(Exception, match="completionsMode"):
        _kubernetes(broken)
    task = tmp_path / "task.yaml"
    task.write_text((DEPLOY / "skypilot" / "task.yaml").read_text().replace("num_nodes:", "num_node:"))
    with pytest.raises(AssertionError, match="num_node"):
        _skypilot(task)
