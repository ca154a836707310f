"""What the laptop side reads from the environment, typed once: the provider, the API keys and the API base URLs
(the same names the pod's autostop uses, so one shell profile serves both; the URLs are for tests and proxies)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from entrypoint.provider_urls import RUNPOD_API_URL, VAST_API_URL

Provider = Literal["runpod", "vast"]


class HostSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    podvisor_cloud: Provider | None = Field(None, description="The provider when --provider is not given.")
    runpod_api_key: SecretStr | None = None
    vast_api_key: SecretStr | None = None
    runpod_api_url: str = RUNPOD_API_URL
    vast_api_url: str = VAST_API_URL
    xdg_config_home: Path = Field(default_factory=lambda: Path.home() / ".config")

    @property
    def config_dir(self) -> Path:
        """Where the laptop side keeps what must outlive one command: the known_hosts of the pods it reached."""
        return self.xdg_config_home / "podvisor"

    @property
    def known_hosts(self) -> Path:
        return self.config_dir / "known_hosts"
