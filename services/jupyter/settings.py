"""JUPYTER_* variables (RunPod's JUPYTER_PASSWORD included)."""
from __future__ import annotations

import re

from pydantic import AliasChoices, Field, SecretStr, field_validator

from entrypoint.fields import AbsPath, Port, Secret
from entrypoint.schema import Section
from entrypoint.workspace import under

HASH_PREFIXES = ("argon2:", "sha1:", "sha256:", "sha512:")
WELL_FORMED_HASH = re.compile(r"sha1:[^:]+:[0-9a-f]{40}|sha256:[^:]+:[0-9a-f]{64}|sha512:[^:]+:[0-9a-f]{128}|"
                              r"argon2:\$argon2(id|i|d)\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+")
"""What jupyter_server's passwd() makes: algorithm:salt:hexdigest, or argon2's own encoding."""
TOKEN_MAX = 1024
URL_PATH = re.compile(r"/[A-Za-z0-9._~/-]*")


class JupyterSettings(Section):
    """Jupyter Lab, as the login user, behind a token or password."""

    jupyter_enabled: bool = Field(True, description="Run Jupyter Lab.")
    jupyter_port: Port = Field(8888, description="Port Jupyter Lab listens on.")
    jupyter_token: Secret = Field(
        None, validation_alias=AliasChoices("jupyter_token", "open_button_token"),
        description="Token for Jupyter (the `?token=` of its URL; OPEN_BUTTON_TOKEN is Vast's). Unset: one is "
                    "generated and `podvisor status` says where to read it.",
    )
    jupyter_password: Secret = Field(
        None, description="RunPod's name: a password hash (argon2:/sha1:...) or, as plain text, used as the token."
    )
    jupyter_allow_no_auth: bool = Field(False, description="Start Jupyter with no token or password (unsafe).")
    jupyter_root_dir: AbsPath = Field(**under(""), validation_alias=AliasChoices("jupyter_root_dir", "jupyter_dir"),
                                      description="Folder Jupyter opens on.")
    jupyter_base_url: str = Field("/", description="URL prefix, for running behind a proxy path.")
    autostop_jupyter_idle_minutes: float = Field(
        60, gt=0, le=10080,
        description="Jupyter keeps the pod from the idle autostop while a kernel runs code, or kernels or terminals "
                    "were active within these minutes; a browser tab left open is not activity.",
    )

    @field_validator("jupyter_base_url")
    @classmethod
    def _slashes(cls, value: str) -> str:
        if not value.startswith("/") or " " in value:
            raise ValueError(f"{value!r} is not a URL path; expected a path starting with /, such as /lab-proxy/")
        if not URL_PATH.fullmatch(value):  # '/ü/' started, and every page answered 404
            raise ValueError(f"{value!r} holds characters a URL path cannot carry as they are; expected letters "
                             "a-z, A-Z, digits and - . _ ~ / only, such as /lab-proxy/")
        return value if value.endswith("/") else value + "/"

    @field_validator("jupyter_token", "jupyter_password")
    @classmethod
    def _usable(cls, value: SecretStr | None) -> SecretStr | None:
        """A credential Jupyter could never accept is an error now, not a login that fails forever."""
        secret = value.get_secret_value() if value else ""
        if len(secret) > TOKEN_MAX:  # a 100 KB token passes Tornado's 64 KB limit on a request's head
            raise ValueError(f"is {len(secret)} characters long; expected at most {TOKEN_MAX} (Jupyter refuses "
                             "every request that carries a credential this long, so no one could log in)")
        if secret.startswith(HASH_PREFIXES) and not WELL_FORMED_HASH.fullmatch(secret):
            raise ValueError(f"starts like a password hash ({secret.split(':')[0]}:) but is not a whole one, so "
                             "every login would be refused; expected the full output of `python -c \"from "
                             "jupyter_server.auth import passwd; print(passwd())\"` (or a plain-text password)")
        return value

    def token(self) -> str | None:
        """The token to require: JUPYTER_TOKEN, else a plain-text JUPYTER_PASSWORD."""
        if self.jupyter_token and self.jupyter_token.get_secret_value():
            return self.jupyter_token.get_secret_value()
        password = self.password_hash()
        if password is None and self.jupyter_password and self.jupyter_password.get_secret_value():
            return self.jupyter_password.get_secret_value()
        return None

    def password_hash(self) -> str | None:
        value = self.jupyter_password.get_secret_value() if self.jupyter_password else ""
        return value if value.startswith(HASH_PREFIXES) else None
