"""Secrets out of text: every error or log line that might quote a token passes through here first."""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from pydantic import SecretStr

if TYPE_CHECKING:
    from entrypoint.schema import Config

MIN_SECRET_LENGTH = 4
"""Shorter values would mask ordinary words; no real token is that short."""


TOKEN_LIKE = re.compile(r"(TOKEN|_KEY|SECRET|PASSWORD|PASSWD|_PASS|CREDENTIALS?)$", re.IGNORECASE)
"""Names of variables that hold secrets, whether a section declares them or not (the user's own W&B, OpenAI,
registry or provider keys reach the job and SSH sessions all the same)."""
NOT_SECRET = re.compile(r"PUBLIC|PUBKEY|^SSH_KEY$", re.IGNORECASE)
"""Public keys: harmless to show, and redacting them would hide which key a log line is about."""


def secrets_of(config: Config) -> list[str]:
    """Every secret value the config holds, plus every token-like variable in the environment."""
    values = [getattr(section, name).get_secret_value() for section in config.sections.values()
              for name in type(section).model_fields if isinstance(getattr(section, name), SecretStr)]
    values += [value for name, value in os.environ.items() if TOKEN_LIKE.search(name) and not NOT_SECRET.search(name)]
    return sorted({v for v in values if len(v) >= MIN_SECRET_LENGTH}, key=len, reverse=True)


URL_TOKEN = re.compile(r"([?&](?:token|api_key|access_token)=)[^&\s]+", re.IGNORECASE)
"""A token in a URL a program prints (Jupyter's `?token=`), even one podvisor never knew."""


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return URL_TOKEN.sub(r"\1***", text)
