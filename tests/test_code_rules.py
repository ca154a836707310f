"""Rules of the code itself, checked on its source: a variable the schema has a field for is read through the
schema, and a provider's injected variable only by cloud detection, so behaviour and validation cannot drift
apart (UPLOAD_HF_PRIVATE=y once validated as true while the Hub destination read the raw string)."""
from __future__ import annotations

import ast
from pathlib import Path

from entrypoint.schema import env_names, sections

ROOT = Path(__file__).resolve().parent.parent
PROVIDER_VARIABLES = {"RUNPOD_POD_ID", "RUNPOD_PUBLIC_IP", "CONTAINER_ID", "VAST_CONTAINERLABEL", "PUBLIC_IPADDR",
                      "KUBERNETES_SERVICE_HOST"}
ALLOWED = {
    ("entrypoint/schema.py", None): "the schema itself",
    ("entrypoint/cloud.py", None): "cloud detection reads the provider's variables once",
    ("entrypoint/registry.py", "PODVISOR_EXTRA_SERVICES"): "which sections exist must be known before the schema "
                                                           "can be validated",
}


def _raw_reads(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, VARIABLE) of each os.environ[...] load, os.environ.get(...) and os.getenv(...) with a literal name."""
    found = []
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and ast.unparse(node.value) == "os.environ":
            name = node.slice
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("os.environ.get", "os.getenv") and node.args:
            name = node.args[0]
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            found.append((node.lineno, name.value.upper()))
    return found


def test_no_module_reads_a_schema_or_provider_variable_from_the_environment():
    schema_variables = {n for _, cls in sections() for f, info in cls.model_fields.items() for n in env_names(f, info)}
    watched = schema_variables | PROVIDER_VARIABLES
    offences = []
    for path in sorted([*ROOT.glob("entrypoint/**/*.py"), *ROOT.glob("services/**/*.py")]):
        relative = str(path.relative_to(ROOT))
        if (relative, None) in ALLOWED:
            continue
        for line, variable in _raw_reads(ast.parse(path.read_text())):
            if variable in watched and (relative, variable) not in ALLOWED:
                offences.append(f"{relative}:{line} reads {variable} raw")
    assert not offences, "read these through the schema (ctx.section/ctx.core) or the cloud:\n" + "\n".join(offences)


def test_the_rule_catches_each_way_of_reading():
    source = "import os\na = os.environ['SSH_PORT']\nb = os.environ.get('JUPYTER_PORT')\nc = os.getenv('x')\n"
    assert _raw_reads(ast.parse(source)) == [(2, "SSH_PORT"), (3, "JUPYTER_PORT"), (4, "X")]
