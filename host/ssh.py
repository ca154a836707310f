"""SSH to a pod the safe way: a host key is pinned on first contact (`accept-new`) in podvisor's own known_hosts
under the user's config dir, never /dev/null and never `no`; a different key later is refused by OpenSSH and said
in words, since a pod re-created on a reused address and a man in the middle look the same from here."""
from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

CHANGED = ("REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key verification failed")
SSH_FAILED = 255
"""ssh's own exit code when it could not connect or log in (a remote command's codes are the command's)."""


class HostKeyChanged(Exception):
    pass


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    known_hosts: Path
    identity: Path | None = None
    user: str = "root"

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}"

    def argv(self, batch: bool = True, tty: bool = False) -> list[str]:
        self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        opts = ["-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "-p", str(self.port)]
        if self.identity is not None:
            opts += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        if batch:
            opts += ["-o", "BatchMode=yes"]
        if tty:
            opts.append("-t")
        return ["ssh", *opts, f"{self.user}@{self.host}"]

    def command_line(self) -> str:
        """What a user types: the same host and port, with their own defaults for the rest."""
        identity = f" -i {self.identity}" if self.identity else ""
        return f"ssh{identity} -p {self.port} {self.user}@{self.host}"

    def changed_key(self) -> HostKeyChanged:
        return HostKeyChanged(
            f"the host key of {self.address} is not the one podvisor pinned there before ({self.known_hosts}). "
            f"A pod re-created on the same address has a new key: if that is what happened, forget the old one "
            f"with `ssh-keygen -R '{self.address}' -f {self.known_hosts}` and connect again. Otherwise do not: "
            "something else answers at that address.")

    def run(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """A command on the pod, its output captured."""
        try:
            result = subprocess.run([*self.argv(), command], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess([], SSH_FAILED, "", f"no answer within {timeout:.0f} s")
        if result.returncode == SSH_FAILED and any(marker in result.stderr for marker in CHANGED):
            raise self.changed_key()
        return result

    def session(self, command: list[str]) -> int:
        """An interactive session (or a command with the user's terminal); OpenSSH's own messages pass through
        and a changed host key is explained after them."""
        proc = subprocess.Popen([*self.argv(batch=False, tty=not command and sys.stdin.isatty()), *command],
                                stderr=subprocess.PIPE, text=True)
        seen: list[str] = []

        def relay() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                seen.append(line)
                sys.stderr.write(line)

        thread = threading.Thread(target=relay, daemon=True)
        thread.start()
        code = proc.wait()
        thread.join(5)
        if code == SSH_FAILED and any(marker in line for line in seen for marker in CHANGED):
            raise self.changed_key()
        return code

    def forget(self) -> None:
        """Drop the pinned key of this address: the pod behind it is gone, and the next one there is new."""
        if self.known_hosts.exists():
            subprocess.run(["ssh-keygen", "-R", self.address, "-f", str(self.known_hosts)], capture_output=True)
