"""The typed schema of every environment variable: the core section here, one section per service folder.

It is the single source of truth: `podvisor config`, env.example and the README's variable table are all
rendered from these classes, so a variable cannot be documented without existing or exist undocumented.
"""
from __future__ import annotations

import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from collections.abc import Callable, Mapping

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from entrypoint.fields import BindHost, ControlCredential, CsvList, CsvPaths, OwnDir, Seconds
from entrypoint.workspace import default_state_dir

PROVIDERS = ("auto", "runpod", "vast", "kubernetes", "docker", "local")


class Section(BaseSettings):
    """Base of every schema section: plain env var names, no prefix, unknown variables ignored."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", populate_by_name=True,
                                      allow_inf_nan=False)


class CoreSettings(Section):
    """podvisor itself: where state lives, how long a stop may take, which provider this is."""

    podvisor_state_dir: OwnDir = Field(
        default_factory=lambda: default_state_dir(), json_schema_extra={"default_text": "<workspace>/.podvisor"},
        description="Holds state, logs, timings and the generated supervisord config; keep it on the volume. "
                    "Default: .podvisor in the workspace, or for a normal user who may not write there (a bare "
                    "host), $XDG_STATE_HOME/podvisor (~/.local/state/podvisor).",
    )
    podvisor_grace_seconds: Seconds = Field(
        25, le=3600, description="Stop grace: services stop in reverse order within this; fits `docker stop -t 30`."
    )
    podvisor_provider: Literal[PROVIDERS] = Field(  # type: ignore[valid-type]
        "auto", description="Cloud provider; auto detects RunPod, Vast.ai, Kubernetes, Docker or a local run."
    )
    podvisor_bind_host: BindHost = Field(
        "0.0.0.0", description="Address services listen on; 127.0.0.1 keeps a local run off the network."
    )
    podvisor_workspace: OwnDir = Field(
        Path("/workspace"), validation_alias=AliasChoices("podvisor_workspace", "workspace", "data_directory"),
        description="The persistent volume: the state dir, repo, venv, datasets, checkpoints, models and Jupyter's "
                    "root default to folders under it (DATA_DIRECTORY is Vast's name).",
    )
    ssh_user: str = Field(
        "runner", pattern=r"^[a-z_][a-z0-9_-]{0,31}$",
        description="Login user for SSH, Jupyter and the job; created at boot when missing (root runs only).",
    )
    ssh_uid: int | None = Field(None, ge=1, le=2**31 - 1, description="UID of the login user when it is created.")
    ssh_gid: int | None = Field(None, ge=1, le=2**31 - 1, description="GID of the login user when it is created.")
    ssh_sudo: bool = Field(True, description="Passwordless sudo for the login user.")
    podvisor_log_level: Literal["debug", "info", "warn", "error"] = Field(
        "info", description="supervisord and podvisor log level."
    )
    podvisor_log_max_mb: int = Field(
        20, ge=1, le=10_000, description="Size at which each service's log file under the state dir rotates."
    )
    podvisor_log_backups: int = Field(3, ge=0, le=100, description="Rotated log files kept per service.")
    podvisor_extra_services: CsvPaths = Field(
        default_factory=list,
        description="Extra folders holding service folders of your own (comma-separated absolute paths).",
    )
    session_env_passthrough: CsvList = Field(
        default_factory=list,
        description="Control credentials (the variables marked so in this table: provider API keys, GIT_TOKEN) "
                    "that SSH sessions, Jupyter, the job and the hooks get anyway, e.g. RUNPOD_API_KEY for "
                    "runpodctl. Every other variable, HF_TOKEN, WANDB_API_KEY and AWS_* included, they always get.",
    )


@dataclass(frozen=True)
class Problem:
    """One malformed variable, already phrased for the user: `VARIABLE: what is wrong; expected ...`.

    `disables` is False for problems a service survives (one bad SSH key among good ones): `config --check`
    still fails on them, but `start` only reports them. A `warning` (a variable that looks like a typo of ours,
    a Kubernetes service link where a port was expected) never disables anything; `config --check` exits 1
    for warnings alone, 2 when there is an error.
    """

    section: str
    variable: str
    message: str
    disables: bool = True
    warning: bool = False

    def __str__(self) -> str:
        return f"{self.variable}: {self.message}"


@dataclass
class Config:
    """The parsed environment: the valid sections, and every problem found in the others."""

    core: CoreSettings | None
    sections: dict[str, Section] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]



def env_names(name: str, info: FieldInfo) -> list[str]:
    """The variable names a field answers to, the canonical one first, then aliases users already set."""
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice).upper() for choice in alias.choices]
    if isinstance(alias, str):
        return [alias.upper()]
    return [name.upper()]


def is_secret(info: FieldInfo) -> bool:
    return SecretStr in _leaf_types(info.annotation)


def is_control(info: FieldInfo) -> bool:
    return any(isinstance(meta, ControlCredential) for meta in info.metadata)


def _leaf_types(annotation: Any) -> list[Any]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [leaf for arg in args for leaf in _leaf_types(arg)]
    if typing.get_origin(annotation) is typing.Annotated:
        return _leaf_types(args[0])
    return [annotation]


INTERNAL = {"PODVISOR_RUN_ID", "PODVISOR_SERVICE", "PODVISOR_JOB_ATTEMPT", "PODVISOR_RESUME_FROM"}
"""Variables podvisor sets for its own programs: never the user's typos."""
FOREIGN = re.compile(r"^(SSH_(CLIENT|CONNECTION|TTY|AUTH_SOCK|ORIGINAL_COMMAND|ASKPASS)|JUPYTER_(SERVER_\w+|"
                     r"CONFIG_DIR|DATA_DIR|RUNTIME_DIR|PATH)|\w+_SERVICE_(HOST|PORT)\w*|\w+_PORT_\d+_\w+)$")
"""Variables other programs set with our prefixes: an SSH session's, Jupyter's, Kubernetes service links'."""
SERVICE_LINK = re.compile(r"^tcp://[\w.-]+:\d+$")
"""What Kubernetes injects as <SERVICE>_PORT for every Service in the namespace (enableServiceLinks)."""


def parse(sections: list[tuple[str, type[Section]]], advisories: Mapping[str, Callable[[Any], list]],
          environ: Mapping[str, str]) -> Config:
    """Parse `sections` (core first) from `environ`, collecting all problems instead of the first. The caller
    composes the sections (`entrypoint.catalog`): the schema knows no service."""
    config = Config(core=None)
    known: set[str] = set()
    for name, cls in sections:
        valid = True
        known |= {n for f, info in cls.model_fields.items() for n in env_names(f, info)}
        overrides, notes = _service_links(name, cls, environ)
        shadowed, shadow_notes = _empty_shadows(name, cls, environ)
        spelled, case_notes = _case_clashes(name, cls, environ)
        overrides = {**shadowed, **spelled, **overrides}
        config.problems += notes + shadow_notes + case_notes + _alias_clashes(name, cls, environ)
        try:
            instance = cls(**overrides)
        except ValidationError as exc:
            config.problems += _problems(name, cls, exc, environ)
            instance, valid = _with_defaults_for(cls, exc), False
        if name in advisories:
            config.problems += [Problem(name, var, msg, disables=False) for var, msg in advisories[name](instance)]
        if name == "podvisor":
            config.core = instance  # type: ignore[assignment]
        if valid or name == "podvisor":
            config.sections[name] = instance
    config.problems += _lookalikes(known, environ) + _port_clashes(config)
    return config


def _port_clashes(config: Config) -> list[Problem]:
    """Two enabled services on one port: the later would fail to bind and restart forever. It is disabled with
    the reason instead (sections are in start order, so the earlier one, sshd before Jupyter, keeps it)."""
    taken: dict[int, str] = {}
    problems = []
    for name, section in list(config.sections.items()):
        fields = type(section).model_fields
        if any(f.endswith("_enabled") and getattr(section, f) is False for f in fields):
            continue
        for fname, info in fields.items():
            port = getattr(section, fname)
            if not fname.endswith("_port") or not isinstance(port, int):
                continue
            variable = env_names(fname, info)[0]
            if port in taken:
                problems.append(Problem(name, variable, f"{port} is also {taken[port]}; expected a port of its own"))
                config.sections.pop(name, None)
            else:
                taken[port] = variable
    return problems


def _service_links(section: str, cls: type[Section], environ: Mapping[str, str]) -> tuple[dict, list[Problem]]:
    """Port fields holding `tcp://host:port`: Kubernetes put it there for a Service of the same name. The
    field keeps its default (passed as an init value, which wins over the environment) and a warning says so."""
    overrides, notes = {}, []
    for fname, info in cls.model_fields.items():
        for variable in env_names(fname, info):
            raw = _env_get(environ, variable)
            if fname.endswith("_port") and raw and SERVICE_LINK.match(raw.strip()):
                default = info.get_default(call_default_factory=True)
                overrides[fname] = default
                service = variable.removesuffix("_PORT").lower().replace("_", "-")
                notes.append(Problem(section, variable, (
                    f"{raw!r} is a Kubernetes service link (a Service named {service!r} in this namespace sets it), "
                    f"not a port; ignored, using {default}. Set enableServiceLinks: false in the pod spec, or set "
                    f"{variable} to a number"), disables=False, warning=True))
    return overrides, notes


def _empty_shadows(section: str, cls: type[Section], environ: Mapping[str, str]) -> tuple[dict, list[Problem]]:
    """A name of a variable set empty before another of its names set to a value (`HF_TOKEN=` beside
    `HUGGING_FACE_HUB_TOKEN=hf_...`, a template's blank line): the environment would take the empty one. The
    value is used instead (an init value wins over the environment), and a warning names both."""
    overrides, notes = {}, []
    for fname, info in cls.model_fields.items():
        names = env_names(fname, info)
        values = [(n, v) for n in names if (v := _env_get(environ, n)) is not None]
        if len(values) > 1 and not values[0][1].strip():
            used = next(((n, v) for n, v in values[1:] if v.strip()), None)
            if used is not None:
                overrides[fname] = used[1]
                notes.append(Problem(section, values[0][0], (
                    f"is set but empty, which would hide {used[0]}; {used[0]} is used. Unset {values[0][0]} or give "
                    "it the value"), disables=False, warning=True))
    return overrides, notes


def _case_clashes(section: str, cls: type[Section], environ: Mapping[str, str]) -> tuple[dict, list[Problem]]:
    """A variable set in two spellings with different values (`ssh_port` beside `SSH_PORT`): names are read
    whatever their case, and which one won depended on the order the environment lists them. The documented
    spelling is used (an init value wins over the environment), and a warning names the other."""
    overrides, notes = {}, []
    for fname, info in cls.model_fields.items():
        for name in env_names(fname, info):
            if name not in environ:
                continue
            other = next((k for k, v in environ.items() if k != name and k.upper() == name and v != environ[name]),
                         None)
            if other is not None:
                overrides[fname] = environ[name]
                notes.append(Problem(section, other, (
                    f"is {name} in other letters, set to another value; {name} is used. Expected one spelling "
                    "only"), disables=False, warning=True))
    return overrides, notes


def _alias_clashes(section: str, cls: type[Section], environ: Mapping[str, str]) -> list[Problem]:
    """Two names of one variable set to different values: only the first counts, which would surprise."""
    notes = []
    for fname, info in cls.model_fields.items():
        names = env_names(fname, info)
        given = [(n, _env_get(environ, n)) for n in names if _env_get(environ, n)]
        if len({value for _, value in given}) > 1:
            used, *ignored = [n for n, _ in given]
            notes.append(Problem(section, ignored[0], (
                f"is another name for {names[0]}, and {used} is set too with a different value; {used} is used. "
                f"Expected one of them only"), disables=False, warning=True))
    return notes


OTHER_IMAGES = {"CLOUD_PROVIDER": "PODVISOR_PROVIDER", "START_INFERENCE_API": "INFERENCE_ENABLED",
                "START_JUPYTER": "JUPYTER_ENABLED", "ENABLE_JUPYTER": "JUPYTER_ENABLED", "START_SSH": "SSH_ENABLED",
                "ENABLE_SSH": "SSH_ENABLED", "JUPYTER_LAB_PASSWORD": "JUPYTER_PASSWORD"}
"""Names other images and templates read for what a podvisor variable does: set here, they would do nothing
without a word (no spelling is close enough for the look-alike check to catch them)."""


def _lookalikes(known: set[str], environ: Mapping[str, str]) -> list[Problem]:
    """Variables that look like ours but are not (UPLOAD_DESTINATION, JUPYTER_TOKN): they would silently do
    nothing, so each gets a warning naming the closest real variable."""
    notes = []
    for variable in sorted(environ):
        upper = variable.upper()
        if upper in known or upper in INTERNAL or FOREIGN.match(upper):
            continue
        if OTHER_IMAGES.get(upper) in known:
            notes.append(Problem("podvisor", variable, f"is not a podvisor variable and is ignored (other images "
                                 f"read it); set {OTHER_IMAGES[upper]} instead", disables=False, warning=True))
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.85)
        if close:
            notes.append(Problem("podvisor", variable, f"is not a podvisor variable and is ignored; did you mean "
                                 f"{close[0]}?", disables=False, warning=True))
    return notes


def _with_defaults_for(cls: type[Section], exc: ValidationError) -> Section:
    """The section with each malformed variable at its default. For the core section this is what runs:
    exiting instead would make RunPod restart the container in a billed loop, and sshd should come up so the
    user can see the problem. For a service, it lets the advisory checks still see the well-formed values."""
    keys = {str(err["loc"][0]).lower() for err in exc.errors() if err["loc"]}
    bad = {fname: info.get_default(call_default_factory=True) for fname, info in cls.model_fields.items()
           if keys & {k.lower() for k in [fname, *env_names(fname, info)]}}
    return cls(**bad)


_EXPECTED: dict[str, str] = {
    "bool_parsing": "true or false (also 1/0, yes/no, on/off)",
    "bool_type": "true or false",
    "int_parsing": "a whole number",
    "int_parsing_size": "a whole number of a sensible size",
    "int_from_float": "a whole number",
    "int_type": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number (not nan or inf)",
    "path_type": "a path",
    "string_type": "text",
    "url_parsing": "a URL such as https://host/path",
    "url_scheme": "a URL with one of the allowed schemes",
    "string_pattern_mismatch": "a name of lowercase letters, digits, _ or - (at most 32, not starting with a digit)",
}


def _problems(section: str, cls: type[Section], exc: ValidationError, environ: Mapping[str, str]) -> list[Problem]:
    by_key: dict[str, tuple[str, FieldInfo | None]] = {
        key.lower(): (fname, field) for fname, field in cls.model_fields.items()
        for key in [fname, *env_names(fname, field)]}
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        key = str(err["loc"][0]).lower() if err["loc"] else ""
        fname, info = by_key.get(key) or (key, None)
        names = env_names(fname, info) if info else [key.upper()]
        variable = next((n for n in names if _env_get(environ, n) is not None), names[0])
        secret = info is not None and is_secret(info)
        raw = None if secret else _env_get(environ, variable)
        problems.append(Problem(section, variable, _phrase(err, raw, secret)))
    return problems


def _env_get(environ: Mapping[str, str], name: str) -> str | None:
    """The variable as documented, else in any other letters (names are read whatever their case)."""
    if name in environ:
        return environ[name]
    lowered = {k.lower(): v for k, v in environ.items()}
    return lowered.get(name.lower())


QUOTE_MAX = 60
"""Characters of a bad value quoted back: enough to recognise it, not a pasted file in the log."""


def _cut(raw: str) -> str:
    return raw if len(raw) <= QUOTE_MAX else f"{raw[:QUOTE_MAX]}... ({len(raw)} characters)"


def _phrase(err: Mapping[str, Any], raw: str | None, secret: bool) -> str:
    """Turn a pydantic error into `what is wrong; expected ...`, quoting the value only when it is not secret."""
    kind, ctx = err["type"], err.get("ctx") or {}
    shown = "the value" if secret or raw is None else repr(_cut(raw))
    if kind == "value_error":
        message = str(ctx.get("error", err["msg"]))
        if raw and not secret:  # a validator quoting the value: a pasted file is not echoed whole either
            message = message.replace(raw, _cut(raw))
        return message if "expected" in message else f"{message}; expected a valid value"
    if kind in _EXPECTED:
        return f"{shown} is not valid; expected {_EXPECTED[kind]}"
    if kind == "literal_error":
        return f"{shown} is not a known choice; expected one of {ctx.get('expected', '')}"
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind in bounds:
        limit = next(iter(ctx.values()), "")
        return f"{shown} is out of range; expected a number {bounds[kind]} {limit}"
    return f"{shown} is not valid ({err['msg']}); expected a valid value"
