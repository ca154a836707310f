"""The `podvisor` command: start (the container entrypoint), status, logs, config, env-example and data in the
pod; `cloud` and `data` on a laptop."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from entrypoint.schema import Config

EXIT_INVALID = 2
EXIT_WARNINGS = 1
POD_PACKAGES = frozenset({"supervisor", "watchdog", "psutil", "pynvml", "huggingface_hub", "hf_xet", "fastapi",
                          "uvicorn", "prometheus_client"})
"""What the `pod` extra installs (by import name): missing on a laptop install, which runs `cloud` only."""


def _config_json(config: Config) -> dict:
    """The effective configuration, variable names as keys, secrets as "***"."""
    from pydantic import SecretStr

    from entrypoint.schema import env_names

    out: dict = {}
    for section, instance in config.sections.items():
        values = {}
        for fname, info in type(instance).model_fields.items():
            value = getattr(instance, fname)
            if isinstance(value, SecretStr):
                value = "***" if value.get_secret_value() else None
            values[env_names(fname, info)[0]] = value
        out[section] = values
    out["problems"] = [str(p) for p in config.problems]
    return out


def cmd_config(args: argparse.Namespace) -> int:
    from entrypoint.catalog import load

    config = load(advise=True)
    if args.json:
        print(json.dumps(_config_json(config), indent=2, default=str))
    for problem in config.problems:
        print(f"{'warning: ' if problem.warning else ''}{problem}", file=sys.stderr if args.json else sys.stdout)
    if not args.json and config.ok:
        print("config OK")
    if config.errors:
        return EXIT_INVALID
    return EXIT_WARNINGS if config.problems else 0


def cmd_env_example(args: argparse.Namespace) -> int:
    from entrypoint import docs

    if args.readme:
        path = Path(args.readme)
        path.write_text(docs.with_readme_table(path.read_text()))
    else:
        print(docs.env_example(), end="")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    from entrypoint.start import start

    return start()


def cmd_status(args: argparse.Namespace) -> int:
    from entrypoint.context import running
    from entrypoint.status import alive, collect, render_text, unready

    report = collect(running())
    print(json.dumps(report, indent=2, default=str) if args.json else render_text(report))
    if args.live:
        return 0 if alive(report) else 1
    if args.ready:
        reasons = unready(report)
        for reason in reasons:
            print(f"not ready: {reason}", file=sys.stderr)
        return 1 if reasons else 0
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from collections import deque

    from entrypoint.context import running

    paths = running().paths
    names = args.programs or sorted(p.stem for p in paths.logs_dir.glob("*.log"))
    missing = 0
    for name in names:
        log = paths.program_log(name)
        if not log.exists():
            print(f"== {name}: no log at {log}", file=sys.stderr)
            missing += 1
            continue
        print(f"== {name} ({log})")
        with log.open(errors="replace") as f:
            print("".join(deque(f, maxlen=args.lines)), end="")
    return 1 if missing else 0


def cmd_data(args: argparse.Namespace) -> int:
    from entrypoint import datasets

    try:
        ref = datasets.DatasetRef.parse(args.uri)
        if args.action == "publish":
            manifest = datasets.publish(Path(args.folder), ref, args.version, args.archive)
            print(f"published {ref.name}@{manifest['version']} to {ref.repo_id}: {len(manifest['files'])} file(s), "
                  f"{manifest['total_bytes'] / 1e6:.1f} MB, {manifest['rows']} row(s)"
                  + (f", bundled in {manifest['archive']}" if manifest["archive"] else ""))
        elif args.all_latest:
            for entry in datasets.fetch_all_latest(ref, Path(args.dest))["datasets"]:
                where = Path(args.dest) / entry["path"]
                print(f"{entry['name']}@{entry['version']}: {entry['files']} file(s) in {where}")
        else:
            manifest = datasets.fetch(ref, Path(args.dest), None if args.latest else args.version)
            print(f"{ref.name}@{manifest['version']}: {len(manifest['files'])} file(s), "
                  f"{manifest['total_bytes'] / 1e6:.1f} MB, every checksum verified, in {args.dest}")
    except datasets.DatasetError as exc:
        print(f"podvisor data: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the Hub refusing or unreachable (HTTP, connection, file errors): one line, no traceback
        print(f"podvisor data: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}", file=sys.stderr)
        return 1
    return 0


def _data_parser(sub: argparse._SubParsersAction) -> None:
    from entrypoint.datasets import BUNDLE_OVER_FILES

    data = sub.add_parser("data", help="versioned datasets on the Hugging Face Hub: publish, fetch")
    verbs = data.add_subparsers(dest="action", required=True)
    p = verbs.add_parser("publish", help="DIR as NAME/<version>/ with a manifest and checksums, in one commit")
    p.add_argument("folder", metavar="DIR")
    p.add_argument("uri", metavar="hf://datasets/OWNER/REPO/NAME")
    p.add_argument("--version", help="default: the UTC time, e.g. 20261201T134500Z (versions sort by name)")
    p.add_argument("--archive", choices=("auto", "tar.gz", "none"), default="auto",
                   help=f"auto: one .tar.gz for a folder of more than {BUNDLE_OVER_FILES} files")
    p.set_defaults(func=cmd_data)
    p = verbs.add_parser("fetch", help="a version into DEST, every checksum verified")
    p.add_argument("uri", metavar="hf://datasets/OWNER/REPO/NAME[@VERSION]")
    p.add_argument("dest", metavar="DEST")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--version")
    which.add_argument("--latest", action="store_true", help="the newest version (the default)")
    which.add_argument("--all-latest", action="store_true",
                       help="the address is a prefix: the newest version of every dataset under it, and an "
                            "aggregate DEST/manifest.json")
    p.set_defaults(func=cmd_data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="podvisor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start", help="validate, bootstrap and run every enabled service under supervisord")
    p.set_defaults(func=cmd_start)
    p = sub.add_parser("status", help="services, readiness, endpoints and GPUs")
    p.add_argument("--json", action="store_true")
    p.add_argument("--ready", action="store_true",
                   help="exit 0 only when SSH, Jupyter and the API (those enabled) answer: the readiness probe")
    p.add_argument("--live", action="store_true", help="exit 0 while supervisord answers: the liveness probe")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("logs", help="the last lines of supervisord's, the bootstrap's and each service's log")
    p.add_argument("programs", nargs="*", help="supervisord, bootstrap or a service (default: all)")
    p.add_argument("-n", "--lines", type=int, default=100)
    p.set_defaults(func=cmd_logs)
    p = sub.add_parser("config", help="check the environment against the schema")
    p.add_argument("--check", action="store_true",
                   help="list every problem; exit 2 for errors, 1 for warnings only (the default action)")
    p.add_argument("--json", action="store_true", help="print the effective configuration, secrets as ***")
    p.set_defaults(func=cmd_config)
    p = sub.add_parser("env-example", help="print env.example from the schema")
    p.add_argument("--readme", metavar="README", help="rewrite the variable table in this README instead")
    p.set_defaults(func=cmd_env_example)
    _data_parser(sub)
    from host.cli import add_parser as add_cloud_parser

    add_cloud_parser(sub)
    try:
        from entrypoint.registry import discover

        services = discover()
    except ModuleNotFoundError:  # a laptop install: the services' own commands need the pod's packages
        services = []
    for svc in services:
        if svc.cli is not None:
            svc.cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Everything after a `--` is a command for the pod (`podvisor cloud ssh POD -i KEY -- CMD ARGS`), kept out of
    argparse, which cannot tell it from options placed after the pod."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["status", "--live"]:  # the liveness probe, every few seconds on a possibly busy node: no schema
        from entrypoint.live import probe

        return probe()
    rest: list[str] = []
    if "--" in argv:
        argv, rest = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    if rest:
        if not hasattr(args, "remote_command"):
            parser.error("`-- CMD` is for `podvisor cloud ssh POD -- CMD`")
        args.remote_command = rest
    try:
        return args.func(args)
    except ModuleNotFoundError as exc:  # a laptop install asked for a command of the pod's
        if (exc.name or "").split(".")[0] not in POD_PACKAGES:
            raise
        print(f"podvisor {args.command}: needs the pod's packages ({exc.name} is missing): "
              "pip install 'podvisor[pod]'", file=sys.stderr)
        return EXIT_INVALID


if __name__ == "__main__":
    sys.exit(main())
