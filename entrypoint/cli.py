"""The `podvisor` command: start (the container entrypoint), status, config, env-example."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import SecretStr

from entrypoint import docs
from entrypoint.catalog import load
from entrypoint.schema import Config

EXIT_INVALID = 2
EXIT_WARNINGS = 1


def _config_json(config: Config) -> dict:
    """The effective configuration, variable names as keys, secrets as "***"."""
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
    from entrypoint.status import alive, collect, pod_ready, render_text

    report = collect(running())
    print(json.dumps(report, indent=2, default=str) if args.json else render_text(report))
    if args.live:
        return 0 if alive(report) else 1
    if args.ready:
        return 0 if pod_ready(report) else 1
    return 0


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
    p = sub.add_parser("config", help="check the environment against the schema")
    p.add_argument("--check", action="store_true",
                   help="list every problem; exit 2 for errors, 1 for warnings only (the default action)")
    p.add_argument("--json", action="store_true", help="print the effective configuration, secrets as ***")
    p.set_defaults(func=cmd_config)
    p = sub.add_parser("env-example", help="print env.example from the schema")
    p.add_argument("--readme", metavar="README", help="rewrite the variable table in this README instead")
    p.set_defaults(func=cmd_env_example)
    from entrypoint.registry import discover

    for svc in discover():
        if svc.cli is not None:
            svc.cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
