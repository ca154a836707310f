"""Rules of the code itself, checked on its source: a variable the schema has a field for is read through the
schema, and a provider's injected variable only by cloud detection, so behaviour and validation cannot drift
apart (UPLOAD_HF_PRIVATE=y once validated as true while the Hub destination read the raw string)."""
from __future__ import annotations

import ast
import logging
import os
import subprocess
import sys
from pathlib import Path

from entrypoint.catalog import sections
from entrypoint.schema import env_names

ROOT = Path(__file__).resolve().parent.parent
PROVIDER_VARIABLES = {"RUNPOD_POD_ID", "RUNPOD_PUBLIC_IP", "CONTAINER_ID", "VAST_CONTAINERLABEL", "PUBLIC_IPADDR",
                      "KUBERNETES_SERVICE_HOST"}
ALLOWED = {
    ("entrypoint/schema.py", None): "the schema itself",
    ("entrypoint/cloud.py", None): "cloud detection reads the provider's variables once",
    ("entrypoint/workspace.py", None): "the workspace the schema's default paths follow, and the state dir "
                                       "`status --live` finds without loading the schema",
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
    for path in sorted(_our_modules()):
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


def _our_modules() -> list[Path]:
    """The pod's program, its services and the laptop side (which reads its variables through HostSettings)."""
    return [*ROOT.glob("entrypoint/**/*.py"), *ROOT.glob("services/**/*.py"), *ROOT.glob("host/**/*.py")]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_time_edges() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports when it is imported: top-level statements only (an import
    inside a function runs later; one under `if TYPE_CHECKING:` never). `from pkg import sub` imports both."""
    paths = {_module_name(p): p for p in _our_modules()}
    edges: dict[str, set[str]] = {}
    for name, path in paths.items():
        found: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        for target in list(found):  # importing a.b.c runs a and a.b first
            parts = target.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts))}
        edges[name] = {target for target in found if target in paths and target != name}
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import cycle, as the path around it, or [] when there is none."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node], _ = "open", stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node], _ = "done", stack.pop()
        return []

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return []


def test_no_module_of_ours_imports_itself_back_at_import_time():
    edges = _import_time_edges()
    # A package imports its own submodules freely; its submodules then import the package already running.
    edges = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in edges.items()}
    assert _cycle(edges) == [], "an import circle: " + " -> ".join(_cycle(edges))
    schema = ast.parse((ROOT / "entrypoint" / "schema.py").read_text())
    anywhere = {node.module for node in ast.walk(schema) if isinstance(node, ast.ImportFrom)}
    assert not {"entrypoint.registry", "entrypoint.catalog"} & anywhere, "the schema knows no service, even lazily"


LEAVES = ("entrypoint.state_dir", "entrypoint.files", "entrypoint.steps", "entrypoint.redact", "entrypoint.workspace",
          "entrypoint.trust", "entrypoint.provider_urls", "entrypoint.backoff", "entrypoint.logs")
"""The shared facts every module may ask (the state dir's layout and records, supervisor states, atomic
writes, checkpoint steps, redaction): they import nothing of ours, so asking them never loads anything else."""


def test_the_shared_facts_are_leaves():
    edges = _import_time_edges()
    for leaf in LEAVES:
        tree = ast.parse((ROOT / (leaf.replace(".", "/") + ".py")).read_text())
        functions = [f for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
        lazy = {n.module for f in functions for n in ast.walk(f) if isinstance(n, ast.ImportFrom) and n.module}
        assert edges[leaf] == set() and not {m for m in lazy if m.startswith(("entrypoint", "services"))}, leaf


def test_the_entrypoint_reaches_services_only_through_the_registry():
    """The registry discovers services by folder; any other entrypoint module that imported one would tie the
    core to one service's insides (the post-start step once called the uploader's shipper directly)."""
    offenders = []
    for path in set(ROOT.glob("entrypoint/**/*.py")) - {ROOT / "entrypoint" / "registry.py"}:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] == "services"]
    assert offenders == []


def test_a_service_knows_another_only_by_its_settings():
    """A service is its folder: another service may read its section of the schema (the job asks where the
    uploader watches), never its insides; what one service does for another goes through a registry hook."""
    offenders = []
    for path in ROOT.glob("services/*/**/*.py"):
        own = path.relative_to(ROOT).parts[1]
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                parts = name.split(".")
                if parts[0] == "services" and len(parts) > 1 and parts[1] != own and parts[2:] != ["settings"]:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert offenders == []


def test_logging_is_set_up_in_one_place_at_the_configured_level():
    """PODVISOR_LOG_LEVEL reaches podvisor's own loggers: every program sets logging up through
    `entrypoint.logs.configure`, never with a level of its own."""
    own = ROOT / "entrypoint" / "logs.py"
    found = [f"{path.relative_to(ROOT)}:{node.lineno}" for path in _our_modules() if path != own
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Attribute)
             and node.attr == "basicConfig"]
    assert found == [], f"logging set up outside entrypoint.logs: {found}"

    from entrypoint import logs

    logs.configure("warn")
    try:
        assert not logging.getLogger("podvisor").isEnabledFor(logging.INFO)
        logs.configure("debug")
        assert logging.getLogger("podvisor").isEnabledFor(logging.DEBUG)
    finally:
        logs.configure("info")


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


STATUS_PROBE = """
import subprocess, sys
def refuse(*args, **kwargs):
    raise AssertionError(f"status started a program: {args[0] if args else kwargs}")
subprocess.Popen = refuse
from entrypoint.context import running
from entrypoint.registry import discover
from entrypoint.status import collect, render_text
ctx = running()
render_text(collect(ctx))
for svc in discover():  # the hooks a live stack's status calls, called here without one
    for hook in (svc.status, svc.endpoint):
        if hook is not None and svc.name in ctx.config.sections:
            hook(ctx)
print(" ".join(sorted(sys.modules)))
"""
DAEMON_MODULES = ("services.uploader.uploader", "services.uploader.scanner", "services.uploader.restore",
                  "services.autostop.monitor", "services.job.runner", "services.inference.app", "watchdog",
                  "torch", "fastapi", "uvicorn", "huggingface_hub")


def test_status_and_the_healthcheck_load_no_daemon_and_start_no_program(tmp_path):
    """`podvisor status` (and the HEALTHCHECK, `status --ready`) runs every 30 s in the pod: it reads the state
    dir, and neither imports what the services run (watchdog, torch, FastAPI) nor starts a program
    (ssh-keygen for fingerprints or for checking each authorized key)."""
    keys = tmp_path / "services" / "sshd"
    keys.mkdir(parents=True)
    for kind in ("ed25519", "ecdsa"):
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(keys / f"ssh_host_{kind}_key")],
                       check=True)
    pub = (keys / "ssh_host_ed25519_key.pub").read_text()
    env = {"PATH": os.environ["PATH"], "PODVISOR_STATE_DIR": str(tmp_path), "PODVISOR_PROVIDER": "local",
           "AUTHORIZED_KEYS": pub, "UPLOAD_DESTINATIONS": f"file://{tmp_path}/dest",
           "UPLOAD_WATCH_DIRS": str(tmp_path / "ckpt"), "JOB_COMMAND": "python train.py"}
    result = subprocess.run([sys.executable, "-c", STATUS_PROBE], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = set(result.stdout.split())
    assert not [m for m in loaded if m.startswith(DAEMON_MODULES)]
