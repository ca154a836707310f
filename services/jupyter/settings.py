"""JUPYTER_* variables (RunPod's JUPYTER_PASSWORD included)."""
from __future__ import annotations


from pydantic import AliasChoices, Field, field_validator

from entrypoint.fields import AbsPath, Port, Secret
from entrypoint.schema import Section
from entrypoint.workspace import under

HASH_PREFIXES = ("argon2:", "sha1:", "sha256:", "sha512:")


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
        return value if value.endswith("/") else value + "/"

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
