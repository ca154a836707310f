"""Reusable field types for the env schema, so every section parses lists, ports and paths the same way."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr
from pydantic_settings import NoDecode

from entrypoint.workspace import is_system_dir


def _split_csv(value: Any) -> Any:
    """Env vars carry lists as `a,b,c` (or one per line); JSON would surprise users of RunPod's env form."""
    if isinstance(value, str):
        return [part.strip() for part in value.replace("\n", ",").split(",") if part.strip()]
    return value


def _not_empty(value: Any) -> Any:
    """An empty variable would become Path('.'), the folder supervisord happens to start in."""
    if isinstance(value, str) and not value.strip():
        raise ValueError("is empty; expected an absolute path such as /workspace/..., or leave the variable unset "
                         "for the default")
    return value


def _absolute_path(value: Path) -> Path:
    if not value.is_absolute():
        raise ValueError(f"'{value}' is a relative path; expected an absolute path such as /workspace/...")
    return value


CsvList = Annotated[list[str], NoDecode, BeforeValidator(_split_csv)]
"""A comma-separated list of strings."""

Port = Annotated[int, Field(ge=1, le=65535)]
"""A TCP port number."""

AbsPath = Annotated[Path, BeforeValidator(_not_empty), AfterValidator(_absolute_path)]
"""A path that must not depend on the working directory supervisord happens to start programs in."""

def _unset_when_empty(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


OptAbsPath = Annotated[AbsPath | None, BeforeValidator(_unset_when_empty)]
"""An absolute path, or nothing when unset or empty."""


def _own_folder(value: Path) -> Path:
    if is_system_dir(value):
        raise ValueError(f"'{value}' is a system folder, which podvisor would hand to the login user; expected a "
                         "folder of your own such as /workspace")
    return value


OwnDir = Annotated[Path, BeforeValidator(_not_empty), AfterValidator(_absolute_path), AfterValidator(_own_folder)]
"""An absolute folder that podvisor may create and give to the login user: never a system folder."""

def _address(value: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        shown = repr(value[:60]) if value.strip() else "an empty value"
        raise ValueError(f"{shown} is not an IP address; expected one such as 0.0.0.0 (every interface), "
                         "127.0.0.1 (this machine only) or ::") from None


BindHost = Annotated[str, AfterValidator(_address)]
"""An address to listen on: an IP address literal, which sshd, Jupyter and uvicorn all take the same way."""

Seconds = Annotated[float, Field(ge=0)]
"""A non-negative duration in seconds."""

CsvPaths = Annotated[list[AbsPath], NoDecode, BeforeValidator(_split_csv)]
"""A comma-separated list of absolute paths."""


def matching(pattern: str, expected: str, allow_empty: bool = False) -> AfterValidator:
    """The check of a text field that must match `pattern` entirely (`Annotated[str, matching(...)]`, which a type
    checker reads as `str`); the error says what was expected."""
    regex = re.compile(pattern)

    def check(value: str) -> str:
        if (value or not allow_empty) and not regex.fullmatch(value):
            raise ValueError(f"{value!r} is not valid; expected {expected}")
        return value

    return AfterValidator(check)


_PLACEHOLDER = re.compile(
    r"(?i)(your[-_]|set[-_]a[-_]|change[-_]?me|replace[-_]?me|placeholder|<[^>]*>|\{\{|my[-_]bucket|"
    r"^x{3,}$|^(password|passw0rd|secret|token|admin|jupyter|runpod|vast|test|default)$)"
)
"""Values templates and tutorials ship (`set-a-long-random-token`, `s3://your-bucket`, `<token>`) and secrets
anyone can guess: a pod launched with one would be open to the internet or upload nowhere."""


def not_placeholder(value: Any) -> Any:
    text = value.get_secret_value() if hasattr(value, "get_secret_value") else value
    items = text if isinstance(text, list) else [text]
    for item in items:
        if isinstance(item, str) and any(ord(c) < 32 or ord(c) == 127 for c in item):
            raise ValueError("holds a line break or another control character; expected the value on one line "
                             "(a stray newline from copying a file, or a \\n in a template)")
        if isinstance(item, str) and _PLACEHOLDER.search(item.strip()):
            raise ValueError("holds a template placeholder or a publicly known value, not yours; expected your own "
                             "value (a token: a long random one, such as the output of `openssl rand -hex 24`)")
    return value


Secret = Annotated[SecretStr | None, AfterValidator(not_placeholder)]
"""A token or password: never echoed, and never a placeholder or a well-known value."""


class ControlCredential:
    """Field marker: a secret that acts on the pod or the account (a provider API key, the git token), not one
    the user's code needs. Only the service whose section declares it sees it; SSH sessions, Jupyter and its
    kernels, the job and the hooks never do, unless SESSION_ENV_PASSTHROUGH names it."""


ControlSecret = Annotated[Secret, ControlCredential()]
