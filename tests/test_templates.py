"""Every deploy template parses, and names only variables the schema knows (a typo would silently do nothing)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from entrypoint.schema import env_names, sections

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
KNOWN = {name for _, cls in sections() for f, info in cls.model_fields.items() for name in env_names(f, info)}


def _runpod(path: Path) -> set[str]:
    template = json.loads(path.read_text())
    assert set(template["ports"].split(",")) == {"22/tcp", "8888/http", "8000/http"}
    assert template["volumeMountPath"] == "/workspace"
    return {item["key"] for item in template["env"]}


def _vast(path: Path) -> set[str]:
    template = json.loads(path.read_text())
    assert template["runtype"] == "args", "Vast's ssh/jupyter launch modes replace the image's entrypoint"
    return set(template["env"])


def _kubernetes(path: Path) -> set[str]:
    names = set()
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        pod = doc["spec"]["template"]["spec"] if doc["kind"] in ("Deployment", "Job") else None
        if pod is None:
            continue
        grace = next(int(e["value"]) for c in pod["containers"] for e in c["env"] if e["name"] == "PODVISOR_GRACE_SECONDS")
        assert pod["terminationGracePeriodSeconds"] > grace
        assert "nvidia.com/gpu.product" in pod["nodeSelector"]
        if doc["kind"] == "Job":
            assert pod["restartPolicy"] == "Never"
        for container in pod["containers"]:
            assert "nvidia.com/gpu" in container["resources"]["limits"]
            names |= {e["name"] for e in container["env"]}
    assert docs
    return names


TEMPLATES = [(DEPLOY / "runpod" / "template.json", _runpod), (DEPLOY / "vast" / "template.json", _vast),
             (DEPLOY / "kubernetes" / "deployment.yaml", _kubernetes), (DEPLOY / "kubernetes" / "job.yaml", _kubernetes)]


@pytest.mark.parametrize(("path", "reader"), TEMPLATES, ids=lambda v: getattr(v, "name", ""))
def test_template_names_only_known_variables(path, reader):
    names = reader(path)
    assert names, f"{path} sets no variables"
    unknown = sorted(names - KNOWN)
    assert not unknown, f"{path.relative_to(DEPLOY)} names variables the schema does not know: {unknown}"


def test_every_template_is_checked():
    found = {p for p in DEPLOY.rglob("*") if p.suffix in (".json", ".yaml", ".yml")}
    assert found == {path for path, _ in TEMPLATES}
