"""Which API key a command uses and where it came from: the --api-key flag, then RUNPOD_API_KEY / VAST_API_KEY,
then the OS keyring (service `runpod` or `vast`, user `api_key`). The source is said (doctor, errors); the key
never is."""
from __future__ import annotations

from dataclasses import dataclass

from host.settings import HostSettings, Provider

KEYRING_USER = "api_key"
ENV_NAMES = {"runpod": "RUNPOD_API_KEY", "vast": "VAST_API_KEY"}


class NoKey(Exception):
    pass


@dataclass(frozen=True)
class ApiKey:
    value: str
    source: str

    def __repr__(self) -> str:  # an exception or a debug print of one never shows the key
        return f"ApiKey(source={self.source!r})"


def find_key(provider: Provider, flag: str | None, settings: HostSettings) -> ApiKey:
    if flag:
        return ApiKey(flag, "--api-key")
    from_env = getattr(settings, f"{provider}_api_key")
    if from_env is not None and from_env.get_secret_value():
        return ApiKey(from_env.get_secret_value(), ENV_NAMES[provider])
    stored, why = _from_keyring(provider)
    if stored:
        return ApiKey(stored, f"the OS keyring (service {provider!r})")
    raise NoKey(f"no {provider} API key: pass --api-key, set {ENV_NAMES[provider]}, or store it with "
                f"`keyring set {provider} {KEYRING_USER}`" + (f" ({why})" if why else ""))


def _from_keyring(provider: Provider) -> tuple[str | None, str]:
    """The stored key, or why none could be read (no keyring backend on a headless machine is common)."""
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:
        return None, "the keyring package is not installed"
    try:
        return keyring.get_password(provider, KEYRING_USER), ""
    except KeyringError as exc:
        return None, f"keyring: {type(exc).__name__}"
