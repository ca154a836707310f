"""SSH_* variables (and RunPod's PUBLIC_KEY)."""
from __future__ import annotations

from pydantic import Field

from entrypoint.fields import Port
from entrypoint.schema import Section


class SshSettings(Section):
    """OpenSSH server: key-only logins for the login user."""

    ssh_enabled: bool = Field(True, description="Run sshd.")
    ssh_port: Port = Field(22, description="Port sshd listens on inside the container.")
    public_key: str = Field("", description="An authorized public key (RunPod's name for it).")
    ssh_public_key: str = Field("", description="An authorized public key.")
    ssh_authorized_keys: str = Field("", description="More authorized public keys, one per line.")
    ssh_permit_root: bool = Field(False, description="Allow root to log in (with a key; passwords are always off).")

    def keys(self) -> list[tuple[str, str]]:
        """(variable and position, key line) for every key given, in order, blank lines skipped."""
        found = []
        for variable, text in (("PUBLIC_KEY", self.public_key), ("SSH_PUBLIC_KEY", self.ssh_public_key),
                               ("SSH_AUTHORIZED_KEYS", self.ssh_authorized_keys)):
            lines = [line.strip() for line in text.replace("\\n", "\n").splitlines() if line.strip()]
            found += [(f"{variable} key #{i}", line) for i, line in enumerate(lines, 1)]
        return found
