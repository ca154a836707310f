"""The schema composed from the registry: every section in documentation order, and what needs all of them
(parsing the environment, which variables are public, which are control credentials). The schema itself knows
no service; the registry knows the schema only as a type; this module is where the two meet."""
from __future__ import annotations

import os
from typing import Any
from collections.abc import Callable, Collection, Iterable, Mapping

from entrypoint.bootstrap.settings import BootstrapSettings
from entrypoint.registry import discover
from entrypoint.schema import Config, CoreSettings, Section, env_names, is_control, is_secret, parse


def sections() -> list[tuple[str, type[Section]]]:
    """(name, class) of every section in documentation order: core first, then services by start order."""
    found: list[tuple[str, type[Section]]] = [("podvisor", CoreSettings), ("bootstrap", BootstrapSettings)]
    found += [(svc.name, svc.settings) for svc in discover() if svc.settings is not None]
    return found


def load(advise: bool = False) -> Config:
    """Every section parsed from this process's environment, with every problem found; with `advise`, the
    services' advisories too (warnings a service survives, some of which run a program: each authorized key
    goes through ssh-keygen). Only `config --check` and `start` report those; readers (status, the
    HEALTHCHECK, the services themselves) need the settings alone."""
    advisories: dict[str, Callable[[Any], list]] = {
        svc.name: svc.advise for svc in discover() if svc.advise} if advise else {}
    return parse(sections(), advisories, os.environ)


def public_variables() -> set[str]:
    """Every variable name of a field that is not a secret."""
    return {variable for _, cls in sections() for fname, info in cls.model_fields.items() if not is_secret(info)
            for variable in env_names(fname, info)}


EVERY_SECTION = "*"
"""An owner that declares every section: for podvisor's own step that names every variable set (the manifest)."""


def control_credentials() -> dict[str, str]:
    """Every variable that names a control credential, with the one section (service) that may see it."""
    return {variable: name for name, cls in sections() for fname, info in cls.model_fields.items()
            if is_control(info) for variable in env_names(fname, info)}


def without_control(environ: Mapping[str, str], owners: Collection[str] = (),
                    passthrough: Iterable[str] = ()) -> dict[str, str]:
    """`environ` less the control credentials that no section of `owners` declares and that `passthrough`
    does not name: with no owners, the environment for anything the user's code runs in; with EVERY_SECTION
    among them, all of it."""
    hidden = {variable for variable, section in control_credentials().items()
              if section not in owners and EVERY_SECTION not in owners}
    hidden -= {name.upper() for name in passthrough}
    return {key: value for key, value in environ.items() if key.upper() not in hidden}
