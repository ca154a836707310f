"""SSH_* variables, and the names users and platforms already use for keys (RunPod's PUBLIC_KEY, Vast's
/root/.ssh/authorized_keys, AUTHORIZED_KEYS, SSH_PUBKEY, SSH_KEY)."""
from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field

from entrypoint.fields import CsvPaths, Port
from entrypoint.schema import Section

UNPRIVILEGED_SSH_PORT = 2222
VAST_KEYS_FILE = Path("/root/.ssh/authorized_keys")
"""Where Vast writes the account's SSH keys when the instance starts."""


class SshSettings(Section):
    """OpenSSH server: key-only logins for the login user (and root where the provider's console uses it)."""

    ssh_enabled: bool = Field(True, description="Run sshd.")
    ssh_port: Port = Field(
        default_factory=lambda: 22 if os.geteuid() == 0 else UNPRIVILEGED_SSH_PORT,
        description="Port sshd listens on. Default: 22 as root (a container), 2222 for a normal user on a bare "
                    "host, who may not bind 22 and whose host's own sshd has it.",
    )
    public_key: str = Field("", description="An authorized public key (RunPod and Vast set it from your account).")
    ssh_public_key: str = Field(
        "", validation_alias=AliasChoices("ssh_public_key", "ssh_pubkey", "ssh_key"),
        description="An authorized public key.",
    )
    ssh_authorized_keys: str = Field(
        "", validation_alias=AliasChoices("ssh_authorized_keys", "authorized_keys"),
        description="More authorized public keys, one per line.",
    )
    ssh_authorized_keys_files: CsvPaths = Field(
        default_factory=lambda: [VAST_KEYS_FILE],
        description="Files of authorized keys to honour for the login user too (Vast writes the account's keys "
                    "to /root/.ssh/authorized_keys).",
    )
    ssh_permit_root: bool | None = Field(
        None, description="Let root log in with a key (passwords are always off). Default: on for RunPod and "
                          "Vast, whose Connect dialog shows `ssh root@HOST -p PORT`; off elsewhere.",
    )

    autostop_ssh_idle_minutes: float = Field(
        60, gt=0, le=10080,
        description="An open SSH session keeps the pod from the idle autostop only while its user typed or a program "
                    "it started used CPU within these minutes; a session left open and idle stops counting.",
    )

    def keys(self) -> list[tuple[str, str]]:
        """(source and position, key line) for every key given, in order, blank lines and comments skipped."""
        sources = [("PUBLIC_KEY", self.public_key), ("SSH_PUBLIC_KEY", self.ssh_public_key),
                   ("SSH_AUTHORIZED_KEYS", self.ssh_authorized_keys)]
        for path in self.ssh_authorized_keys_files:
            try:
                sources.append((str(path), path.read_text()))
            except OSError:
                continue
        found = []
        for source, text in sources:
            lines = [line.strip() for line in text.replace("\\n", "\n").splitlines()
                     if line.strip() and not line.strip().startswith("#")]
            found += [(f"{source} key #{i}", line) for i, line in enumerate(lines, 1)]
        return found
