"""What each `podvisor cloud` command does and prints. Every command says what failed in one
line and exits 1 (2 for a usage problem); `--json` prints data only, never a key."""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import ValidationError

from host.api import ApiError, Refused
from host.keys import NoKey, find_key
from host.pods import Cluster, LaunchRequest, Pod, Provider, Template
from host.settings import HostSettings
from host.settings import Provider as ProviderName
from host.ssh import SSH_FAILED, HostKeyChanged, Target
from host.wait import NotReady, probe, target_of, wait_until_ready

if TYPE_CHECKING:
    from host.runpod import RunPod

TEMPLATES = Path(__file__).resolve().parent / "templates"
"""The providers' templates, shipped in the package (deploy/<provider>/template.json links here)."""
SSH_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


class Usage(Exception):
    pass


def provider_name(args: argparse.Namespace, settings: HostSettings) -> ProviderName:
    name = args.provider or settings.podvisor_cloud
    if name is None:
        raise Usage("which provider? pass --provider runpod|vast or set PODVISOR_CLOUD")
    return name


def provider_of(args: argparse.Namespace, settings: HostSettings) -> Provider:
    name = provider_name(args, settings)
    key = find_key(name, args.api_key, settings)
    if name == "runpod":
        from host.runpod import RunPod
        return RunPod(key, settings)
    from host.vast import Vast
    return Vast(key, settings)


def _table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max([len(c), *(len(str(r.get(c, ""))) for r in rows)]) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _emit(args: argparse.Namespace, data: object, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def _ssh_of(args: argparse.Namespace, settings: HostSettings, pod: Pod) -> Target | None:
    return target_of(pod, settings.known_hosts, args.identity, args.user)


def _target(args: argparse.Namespace, settings: HostSettings, pod: Pod) -> Target:
    target = _ssh_of(args, settings, pod)
    if target is None:
        raise ApiError(f"pod {pod.id} has no SSH address yet (status {pod.status}); "
                       f"`podvisor cloud status {pod.id}` shows when it has one")
    return target


def cmd_gpus(args: argparse.Namespace, settings: HostSettings) -> int:
    provider = provider_of(args, settings)
    try:
        gpus = provider.gpus(args.min_vram, args.max_price, args.cloud, args.count)
    except Refused as exc:
        if provider.name != "runpod":
            raise
        print(f"RunPod's GPU catalog refused this key (HTTP {exc.status}): launch anyway with --gpu-type-id ID "
              "(e.g. 'NVIDIA GeForce RTX 4090')",
              file=sys.stderr)
        return 1
    rows = [asdict(g) for g in gpus]
    _emit(args, rows, _table(rows, ["id", "name", "vram_gb", "price_per_hour", "cloud", "available"])
          if rows else "no GPU matches")
    return 0


def cmd_templates(args: argparse.Namespace, settings: HostSettings) -> int:
    rows = [asdict(t) for t in provider_of(args, settings).templates(args.name)]
    _emit(args, rows, _table(rows, ["id", "name", "image"]) if rows else "no template matches")
    return 0


def _repo_template(provider: Provider, path: Path | None) -> dict:
    path = path or TEMPLATES / provider.template_file
    if not path.is_file():
        raise Usage(f"no template at {path}: pass --file with the provider's template JSON")
    return json.loads(path.read_text())


def cmd_template_push(args: argparse.Namespace, settings: HostSettings) -> int:
    provider = provider_of(args, settings)
    action, made = provider.push_template(_repo_template(provider, args.file))
    _emit(args, {"action": action, **asdict(made)},
          f"template {made.name!r} {action}: id {made.id}, image {made.image}")
    return 0


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise Usage(f"--env {pair.split('=')[0]!r}: expected NAME=VALUE")
        env[name] = value
    return env


def _template(provider: Provider, wanted: str) -> Template:
    found = provider.templates(None if provider.name == "vast" and len(wanted) >= 32 else wanted)
    exact = [t for t in found if wanted in (t.id, t.name)]
    if len(exact) != 1:
        names = ", ".join(f"{t.name} ({t.id})" for t in found[:5]) or "none"
        raise Usage(f"--template {wanted!r} matches {len(exact)} template(s) by id or name (seen: {names}); "
                    "`podvisor cloud templates` lists them, `podvisor cloud template push` makes ours")
    return exact[0]


def _resolve_gpu(args: argparse.Namespace, provider: Provider) -> tuple[str, bool, str | None]:
    """(the GPU id, whether the listing confirmed it, the cloud of the row chosen): without --cloud, RunPod's
    cheapest row may be a community one, and the pod must go where that price is, not to the default cloud."""
    if args.gpu_type_id:
        if provider.name == "runpod":
            print(f"warning: GPU type {args.gpu_type_id!r} used as given, not checked against RunPod's listing",
                  file=sys.stderr)
        return args.gpu_type_id, False, None
    if provider.name == "vast":
        return args.gpu, True, None
    try:
        listed = provider.gpus(0, None, args.cloud, args.count)
    except Refused:
        raise Usage("RunPod refused the GPU catalog for this key, so --gpu cannot be resolved: pass the "
                    "exact type with --gpu-type-id (e.g. 'NVIDIA GeForce RTX 4090')") from None
    match = [g for g in listed if args.gpu.lower() in (g.id.lower(), g.name.lower())] or \
            [g for g in listed if args.gpu.lower() in g.name.lower()]
    if not match:
        raise Usage(f"no RunPod GPU type in stock matches {args.gpu!r}; `podvisor cloud gpus` lists them")
    chosen = match[0]
    if len({g.id for g in match}) > 1:
        print(f"{len({g.id for g in match})} GPU types match {args.gpu!r}: taking the cheapest, {chosen.id} "
              f"(${chosen.price_per_hour}/h); --gpu-type-id picks one", file=sys.stderr)
    if not args.cloud:
        print(f"{chosen.name} in the {chosen.cloud} cloud, the cheapest at ${chosen.price_per_hour}/h (--cloud picks "
              "one)", file=sys.stderr)
    return chosen.id, True, chosen.cloud


def cmd_launch(args: argparse.Namespace, settings: HostSettings) -> int:
    provider = provider_of(args, settings)
    if bool(args.template) == bool(args.image):
        raise Usage("give one of --template ID|NAME or --image REF")
    if not (args.gpu or args.gpu_type_id):
        raise Usage("give --gpu NAME (or --gpu-type-id ID; on Vast an offer id from `cloud gpus`)")
    gpu, checked, cloud = _resolve_gpu(args, provider)
    request = LaunchRequest(gpu, checked, args.count, args.cloud or cloud,
                            _template(provider, args.template) if args.template else None, args.image,
                            _parse_env(args.env), args.volume_gb, args.name, args.max_price)
    if args.nodes > 1:
        return _launch_cluster(args, settings, _clusters(provider, "--nodes"), request)
    pod = provider.launch(request)
    print(f"launched {pod.id} ({pod.gpu or gpu}{f', ${pod.price_per_hour}/h' if pod.price_per_hour else ''})",
          file=sys.stderr)
    if not args.wait:
        _emit(args, pod.as_json(), f"{pod.id}: {pod.status}; `podvisor cloud launch ... --wait` or "
                                   f"`podvisor cloud status {pod.id}` to follow it")
        return 0
    ready = wait_until_ready(provider, pod.id, lambda p: _ssh_of(args, settings, p), args.timeout, args.interval)
    _emit(args, {**ready.pod.as_json(), "ssh": ready.target.command_line(), "urls": _urls(ready.pod, ready.report)},
          _ready_text(ready.pod, ready.target, ready.report))
    return 0


def _clusters(provider: Provider, asked: str) -> RunPod:
    """The provider, as one whose clusters podvisor can launch and manage: RunPod's Instant Clusters."""
    from host.runpod import RunPod

    if not isinstance(provider, RunPod):
        raise Usage(f"{asked}: only RunPod's Instant Clusters are launched as one; on {provider.name}, launch each "
                    "node and give it JOB_NNODES, JOB_NODE_RANK and JOB_MASTER_ADDR")
    return provider


def _launch_cluster(args: argparse.Namespace, settings: HostSettings, provider: RunPod,
                    request: LaunchRequest) -> int:
    """An Instant Cluster; with --wait, until every node's SSH and stack answer (the nodes appear as RunPod
    places them, then each is waited on within what is left of --timeout)."""
    cluster = provider.launch_cluster(request, args.nodes)
    print(f"launched cluster {cluster.id} ({args.nodes} nodes, {request.count} x {request.gpu} each)", file=sys.stderr)
    if not args.wait:
        _emit(args, cluster.as_json(), f"{cluster.id}: {len(cluster.pods)} of {cluster.size} node(s) placed; "
                                       f"`podvisor cloud status {cluster.id}` to follow it")
        return 0
    deadline = time.monotonic() + args.timeout
    while len(cluster.pods) < cluster.size:
        if time.monotonic() >= deadline:
            raise NotReady(f"cluster {cluster.id}: {len(cluster.pods)} of {cluster.size} node(s) placed after "
                           f"{args.timeout:.0f} s; `podvisor cloud status {cluster.id}`")
        time.sleep(args.interval)
        cluster = provider.cluster(cluster.id)
    ready = [wait_until_ready(provider, pod.id, lambda p: _ssh_of(args, settings, p),
                              max(deadline - time.monotonic(), args.interval), args.interval) for pod in cluster.pods]
    lines = [f"cluster {cluster.id} is ready: {len(ready)} nodes"]
    lines += [f"  node {rank}  {node.target.command_line()}" for rank, node in enumerate(ready)]
    _emit(args, {**cluster.as_json(), "pods": [{**node.pod.as_json(), "ssh": node.target.command_line()}
                                               for node in ready]}, "\n".join(lines))
    return 0


def _urls(pod: Pod, report: dict) -> dict[str, str]:
    """The pod's own view of its endpoints when it has one (it knows its proxy names), else the provider's."""
    services = report.get("services", {})
    own = {"jupyter": services.get("jupyter", {}).get("endpoint"), "api": services.get("inference", {}).get("endpoint")}
    return {name: own.get(name) or url for name, url in pod.urls.items()}


def _ready_text(pod: Pod, target: Target, report: dict) -> str:
    urls = _urls(pod, report)
    jupyter = report.get("services", {}).get("jupyter", {}).get("summary", "")
    lines = [f"pod {pod.id} is ready", f"  ssh      {target.command_line()}"]
    if "jupyter" in urls:
        lines.append(f"  jupyter  {urls['jupyter']}" + (f"  (on the pod: {jupyter})" if jupyter else ""))
    if "api" in urls:
        lines.append(f"  api      {urls['api']}")
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace, settings: HostSettings) -> int:
    provider = provider_of(args, settings)
    pods = provider.pods()
    rows = [{**p.as_json(), "ssh": f"{p.ssh_host}:{p.ssh_port}" if p.ssh_port else "-", "cluster": p.cluster or "-"}
            for p in pods]
    _emit(args, [p.as_json() for p in pods],
          _table(rows, ["id", "name", "status", "gpu", "price_per_hour", "ssh", "cluster"]) if rows else "no pods")
    return 0


def _cluster_named(provider: Provider, wanted: str) -> Cluster | None:
    """The RunPod cluster whose id `wanted` is, or None for a pod's id."""
    if provider.name != "runpod":
        return None
    runpod = _clusters(provider, "cluster")
    return runpod.cluster(wanted) if any(c.id == wanted for c in runpod.clusters()) else None


def cmd_status(args: argparse.Namespace, settings: HostSettings) -> int:
    provider = provider_of(args, settings)
    if cluster := _cluster_named(provider, args.pod):
        nodes = [f"  {pod.cluster or pod.id}: {pod.id} {pod.status}" for pod in cluster.pods]
        _emit(args, cluster.as_json(), "\n".join([f"cluster {cluster.id} {cluster.name}: {len(cluster.pods)} of "
                                                  f"{cluster.size} node(s)", *nodes]))
        return 0
    pod = provider.pod(args.pod)
    target = _ssh_of(args, settings, pod)
    ready, state, report = probe(target) if pod.running and target else (False, "not running", {})
    _emit(args, {**pod.as_json(), "stack": state, "report": report},
          f"{pod.id} {pod.name}: {pod.status}, {pod.gpu}, "
          f"{f'${pod.price_per_hour}/h' if pod.price_per_hour is not None else 'price unknown'}\n"
          f"  ssh    {target.command_line() if target else 'no address yet'}\n  stack  {state}")
    return 0


def cmd_ssh(args: argparse.Namespace, settings: HostSettings) -> int:
    pod = provider_of(args, settings).pod(args.pod)
    return _target(args, settings, pod).session(args.remote_command)


def cmd_logs(args: argparse.Namespace, settings: HostSettings) -> int:
    """The pod's own logs over SSH (`podvisor logs`); when SSH does not answer (no address yet, or the
    connection fails), the container's log from the provider's API where it has one (RunPod v2)."""
    provider = provider_of(args, settings)
    pod = provider.pod(args.pod)
    target = _ssh_of(args, settings, pod)
    if target is not None:
        code = target.session(["podvisor", "logs", "-n", str(args.lines), *args.programs])
        if code != SSH_FAILED or provider.logs is None:
            return code
        print(f"{pod.id}: SSH did not answer; the container log from {provider.name}'s API instead",
              file=sys.stderr)
    if provider.logs is None:
        _target(args, settings, pod)  # raises, saying why there is no SSH address
        return SSH_FAILED
    for line in provider.logs(pod.id, args.lines):
        print(line)
    return 0


def cmd_stop(args: argparse.Namespace, settings: HostSettings) -> int:
    provider_of(args, settings).stop(args.pod)
    print(f"{args.pod}: stop requested (compute halts, the volume stays; start it again from the console)")
    return 0


def _pending(args: argparse.Namespace, settings: HostSettings, pod: Pod) -> list[str]:
    """What the pod itself says would be lost by deleting it; a pod that cannot be asked may hold anything."""
    target = _ssh_of(args, settings, pod)
    if not (pod.running and target):
        return [f"the pod cannot be asked whether uploads are pending (status {pod.status}); start it so they drain"]
    result = target.run("podvisor status --json", timeout=30)
    try:
        return json.loads(result.stdout).get("stop_blockers", [])
    except ValueError:
        return [f"the pod did not say whether uploads are pending ({(result.stderr.strip() or 'no answer')[-200:]})"]


def cmd_terminate(args: argparse.Namespace, settings: HostSettings) -> int:
    provider = provider_of(args, settings)
    if cluster := _cluster_named(provider, args.pod):
        runpod = _clusters(provider, "cluster")
        return _terminate(args, settings, f"cluster {cluster.id}", f"{len(cluster.pods)} node(s) and their volumes",
                          cluster.pods, lambda: runpod.terminate_cluster(cluster.id))
    pod = provider.pod(args.pod)
    return _terminate(args, settings, pod.id, "its volume", [pod], lambda: provider.terminate(pod.id))


def _terminate(args: argparse.Namespace, settings: HostSettings, name: str, disks: str, pods: list[Pod],
               delete: Callable[[], None]) -> int:
    """Deleting takes the disks with it: each pod (every node of a cluster) is asked first whether uploads are
    pending, and the user confirms by typing the id."""
    if not args.force:
        pending = [f"{pod.id}: {why}" if len(pods) > 1 else why
                   for pod in pods for why in _pending(args, settings, pod)]
        if pending:
            print(f"not terminating {name}: {'; '.join(pending)}. Terminating deletes {disks}; wait, or pass --force "
                  "to lose them", file=sys.stderr)
            return 1
    if not args.yes:
        if not sys.stdin.isatty():
            raise Usage(f"terminating deletes {name} and {disks}: confirm with --yes")
        if input(f"Terminate {name} and delete {disks}? Type {args.pod} to confirm: ").strip() != args.pod:
            print("not terminated")
            return 1
    delete()
    for pod in pods:
        if target := _ssh_of(args, settings, pod):
            target.forget()
    print(f"{name}: terminated")
    return 0


def cmd_doctor(args: argparse.Namespace, settings: HostSettings) -> int:
    ok = True

    def line(good: bool, text: str) -> None:
        nonlocal ok
        ok &= good
        print(f"{'ok  ' if good else 'FAIL'} {text}")

    name = provider_name(args, settings)
    provider = None
    try:
        key = find_key(name, args.api_key, settings)
        line(True, f"{name} API key found in {key.source}")
        provider = provider_of(args, settings)
        line(True, f"{name} API: {provider.check_key()}")
    except (NoKey, ApiError) as exc:
        line(False, str(exc))
    client = shutil.which("ssh")
    version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip() if client else ""
    line(bool(client), f"SSH client: {version or 'not found (install OpenSSH)'}")
    keys = [k for k in SSH_KEYS if (Path.home() / ".ssh" / k).exists()]
    line(bool(keys or args.identity), f"SSH key: {args.identity or ', '.join(f'~/.ssh/{k}' for k in keys) or 'none'}"
         + ("" if keys or args.identity else " (ssh-keygen -t ed25519; add the .pub to your provider account)"))
    hosts = settings.known_hosts
    count = len(hosts.read_text().splitlines()) if hosts.exists() else 0
    line(True, f"known_hosts: {hosts} ({count} pinned key(s); new pods are pinned on first contact)")
    if provider is not None:
        ours = _repo_template(provider, None)
        image = f"{ours['image']}:{ours['tag']}" if ours.get("tag") else ours["image"]  # Vast splits the tag off
        theirs = [t for t in provider.templates(ours["name"]) if t.name == ours["name"]]
        same = bool(theirs) and theirs[0].image == image
        line(same, f"template {ours['name']!r}: the repo's image {image}, the provider's "
             + (theirs[0].image if theirs else "none yet") + ("" if same else " (`podvisor cloud template push`)"))
    return 0 if ok else 1


def run(name: str, args: argparse.Namespace) -> int:
    try:
        settings = HostSettings()
    except ValidationError as exc:  # the variable and what it wants; never its value, which may be a key
        problems = "; ".join(f"{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        print(f"podvisor cloud: {problems}", file=sys.stderr)
        return 2
    try:
        return globals()[name](args, settings)
    except Usage as exc:
        print(f"podvisor cloud: {exc}", file=sys.stderr)
        return 2
    except (NoKey, ApiError, NotReady, HostKeyChanged, RuntimeError) as exc:
        print(f"podvisor cloud: {exc}", file=sys.stderr)
        return 1
