"""The `podvisor cloud` argument tree. It imports nothing heavy: the commands (requests, the providers) load
only when one of them runs, so the pod's own `podvisor status` does not pay for the laptop side."""
from __future__ import annotations

import argparse
from pathlib import Path


def _run(name: str):
    def run(args: argparse.Namespace) -> int:
        from host.commands import run as run_command
        return run_command(name, args)
    return run


def add_parser(sub: argparse._SubParsersAction) -> None:
    cloud = sub.add_parser("cloud", help="from your laptop: GPUs, templates, launch, SSH, stop (RunPod, Vast.ai)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--provider", choices=("runpod", "vast"), help="default: PODVISOR_CLOUD")
    common.add_argument("--api-key", help="default: RUNPOD_API_KEY / VAST_API_KEY, then the OS keyring")
    common.add_argument("--json", action="store_true", help="data only, for scripts")
    common.add_argument("-i", "--identity", type=Path, help="the SSH private key (default: your ssh defaults)")
    common.add_argument("--user", default="root", help="the SSH user (root, as the consoles show; or podvisor's "
                                                      "login user, runner)")
    verbs = cloud.add_subparsers(dest="verb", required=True)

    def verb(name: str, func: str, help: str) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, parents=[common], help=help)
        p.set_defaults(func=_run(func))
        return p

    p = verb("gpus", "cmd_gpus", "GPU types (RunPod) or offers (Vast) ranked by price")
    p.add_argument("--min-vram", type=float, default=0, metavar="GB")
    p.add_argument("--max-price", type=float, metavar="USD/h")
    p.add_argument("--cloud", choices=("secure", "community"))
    p.add_argument("--count", type=int, default=1, metavar="N")
    p = verb("templates", "cmd_templates", "the provider's templates")
    p.add_argument("--name")
    p = verb("template", "cmd_template_push", "template push: create or update ours (deploy/<provider>/template.json)")
    p.add_argument("action", choices=("push",))
    p.add_argument("--file", type=Path, help="another template file")
    p = verb("launch", "cmd_launch", "create a pod; with --wait, until SSH and `podvisor status --ready` answer")
    p.add_argument("--gpu", help="a GPU name (RunPod type or Vast gpu_name), or a Vast offer id")
    p.add_argument("--gpu-type-id", help="RunPod: the exact GPU type id, used without the listing")
    p.add_argument("--count", type=int, default=1, help="GPUs per pod (per node with --nodes)")
    p.add_argument("--nodes", type=int, default=1, metavar="N",
                   help="RunPod: an Instant Cluster of N pods whose job runs across them")
    p.add_argument("--cloud", choices=("secure", "community"))
    p.add_argument("--max-price", type=float, metavar="USD/h", help="Vast: the most an offer may cost")
    p.add_argument("--template", metavar="ID|NAME")
    p.add_argument("--image", metavar="REF")
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("--volume-gb", type=int)
    p.add_argument("--name", default="podvisor")
    p.add_argument("--wait", action="store_true")
    p.add_argument("--timeout", type=float, default=900, metavar="S")
    p.add_argument("--interval", type=float, default=5, metavar="S", help=argparse.SUPPRESS)
    verb("list", "cmd_list", "your pods")
    for name, func, text in (("status", "cmd_status", "one pod: the provider's view and its stack's"),
                             ("stop", "cmd_stop", "halt compute; the volume stays")):
        verb(name, func, text).add_argument("pod")
    p = verb("ssh", "cmd_ssh", "SSH into a pod (known_hosts pinned on first contact); `-- CMD ARGS` runs a "
                               "command instead of a shell")
    p.add_argument("pod")
    p.set_defaults(remote_command=[])
    p = verb("logs", "cmd_logs", "the pod's logs, over SSH")
    p.add_argument("pod")
    p.add_argument("programs", nargs="*", help="supervisord, bootstrap or a service (default: all)")
    p.add_argument("-n", "--lines", type=int, default=100)
    p = verb("terminate", "cmd_terminate", "delete a pod and its volume (refused while uploads are pending)")
    p.add_argument("pod")
    p.add_argument("--yes", action="store_true", help="do not ask")
    p.add_argument("--force", action="store_true", help="even with uploads pending")
    verb("doctor", "cmd_doctor", "key, API, SSH client and key, known_hosts, template image")
