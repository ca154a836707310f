"""Secrets out of text: every error or log line that might quote a token passes through here first."""
from __future__ import annotations

import os

from pydantic import SecretStr

from entrypoint.schema import Config

MIN_SECRET_LENGTH = 4
"""Shorter values would mask ordinary words; no real token is that short."""


def secrets_of(config: Config) -> list[str]:
    """Every secret value the config holds, plus provider-injected keys that no section declares."""
    values = [getattr(section, name).get_secret_value() for section in config.sections.values()
              for name in type(section).model_fields if isinstance(getattr(section, name), SecretStr)]
    values += [os.environ.get(name, "") for name in ("RUNPOD_API_KEY", "CONTAINER_API_KEY", "VAST_API_KEY",
                                                     "WANDB_API_KEY", "GIT_TOKEN")]
    return sorted({v for v in values if len(v) >= MIN_SECRET_LENGTH}, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
