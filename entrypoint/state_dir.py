"""The state dir: the one place that names every file podvisor keeps there, and reads the running stack's
records (which services this boot started, which were given up on, the bootstrap's progress), with the
states supervisord reports them in.

A leaf: it imports nothing of podvisor's, so the entrypoint, every service, `podvisor status` and the
HEALTHCHECK can all ask it without loading anything else. A service's own files live under
`service_dir(name)`, named by the service itself: nothing outside it knows its insides.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

SOCKET_PATH_MAX = 100
"""AF_UNIX paths are limited to 108 bytes; a deep state dir gets its socket under /tmp instead."""


class SupervisorState(StrEnum):
    """supervisord's process states, as its XML-RPC `statename` spells them."""

    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    EXITED = "EXITED"
    FATAL = "FATAL"
    UNKNOWN = "UNKNOWN"


UP = frozenset({SupervisorState.STARTING, SupervisorState.RUNNING, SupervisorState.BACKOFF})
"""Up, or on its way up: supervisord still means it to run."""
SETTLED = frozenset({SupervisorState.RUNNING, SupervisorState.FATAL, SupervisorState.EXITED})
"""Done starting, one way or the other."""


SYSTEM_SESSION_ENV = Path("/etc/podvisor/session.env")

SUPERVISOR_USER = "podvisor"
"""The user of supervisord's control socket; its password is the credentials file's."""


@dataclass(frozen=True)
class StateDir:
    root: Path

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def program_log(self, name: str) -> Path:
        """A supervised program's output (supervisord, the bootstrap, each service)."""
        return self.logs_dir / f"{name}.log"

    @property
    def services_dir(self) -> Path:
        return self.root / "services"

    def service_dir(self, name: str) -> Path:
        """A service's own state (queues, stamps, host keys), kept on the volume across restarts."""
        return self.services_dir / name

    @property
    def bootstrap_dir(self) -> Path:
        """The bootstrap's own stamps (the requirements' hash) and the provisioning script it fetched."""
        return self.root / "bootstrap"

    @property
    def session_env_file(self) -> Path:
        """The environment a login session gets (sourced by the login shell and `podvisor` from any shell). As
        root it is root's own, under /etc: root's shells source it too, and a file on the volume (the login
        user's) would run whatever that user wrote into it as root at root's next login."""
        return SYSTEM_SESSION_ENV if os.geteuid() == 0 else self.root / "session.env"

    def heartbeat_file(self, name: str) -> Path:
        """A file service `name` touches on activity (API requests); the idle autostop reads its mtime."""
        return self.root / "heartbeats" / name

    @property
    def supervisord_conf(self) -> Path:
        return self.root / "supervisord.conf"

    @property
    def credentials_file(self) -> Path:
        return self.root / "supervisor.auth"

    def supervisor(self) -> Any:
        """An XML-RPC client on supervisord's control socket, with the credentials `start` made (PermissionError
        for a caller the credentials are not shared with)."""
        import xmlrpc.client

        from supervisor.xmlrpc import SupervisorTransport

        password = self.credentials_file.read_text().strip()
        transport = SupervisorTransport(SUPERVISOR_USER, password, f"unix://{self.socket_path}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    @property
    def socket_path(self) -> Path:
        path = self.root / "supervisor.sock"
        if len(str(path)) <= SOCKET_PATH_MAX:
            return path
        import hashlib  # only for a long state dir: loading OpenSSL costs 3.5 MB in every process that asks paths

        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"podvisor-{digest}.sock"

    @property
    def stop_requested_file(self) -> Path:
        """Written (epoch seconds) by the event listener when supervisord begins to shut down."""
        return self.root / "stop_requested"

    @property
    def start_lock_file(self) -> Path:
        """Locked by the `podvisor start` that runs the stack, as long as it runs: a second start refuses."""
        return self.root / "start.lock"

    @property
    def boot_file(self) -> Path:
        """What this boot started and disabled, and why ({"run_id", "started_epoch_ms", "services", "disabled"}),
        written by `start`: the one record of which services are active."""
        return self.root / "boot.json"

    @property
    def given_up_file(self) -> Path:
        """{service: why} for programs the event listener left down after repeated failed starts."""
        return self.root / "given_up.json"

    @property
    def processes_file(self) -> Path:
        """supervisord's process table as the event listener last saw it ({"supervisord_pid", "processes"}),
        readable by all: `podvisor status` for a login user the control socket is not shared with."""
        return self.root / "processes.json"

    @property
    def environment_record_file(self) -> Path:
        """The stack's own variables (schema and provider, never a secret), recorded by `start`, so `podvisor
        status` from any shell (a `docker exec`, a second terminal) sees the running stack as it is."""
        return self.root / "environment.json"

    @property
    def bootstrap_file(self) -> Path:
        """The bootstrap's progress ({"state": running|done|failed, "step", "step_started", "started"}): it runs
        beside sshd and Jupyter, and what needs the repo (the job, the post-start hook) waits for "done"."""
        return self.root / "bootstrap.json"

    @property
    def datasets_file(self) -> Path:
        """The dataset versions the bootstrap put in place ([{"uri", "name", "version", "path"}]): the job's
        PODVISOR_DATASET_DIRS."""
        return self.root / "datasets.json"

    @property
    def manifest_file(self) -> Path:
        """The run manifest (image, commit, config, GPUs, the job's outcome), shipped beside the checkpoints."""
        return self.root / "manifest.json"

    @property
    def exit_code_file(self) -> Path:
        """The exit code the container should end with, then why (a job that failed, a strict hook): `start`
        exits with it once supervisord is done, so a failed Kubernetes Job shows Failed, not Completed."""
        return self.root / "exit_code"

    @property
    def timings_file(self) -> Path:
        return self.root / "timings.jsonl"

    def boot(self) -> dict[str, Any]:
        return _read_json(self.boot_file, {})

    def active_services(self) -> list[str] | None:
        """The services this boot started (a prepare step may have disabled an enabled one); None before `start`
        has written it."""
        return self.boot().get("services")

    def given_up(self) -> dict[str, str]:
        return _read_json(self.given_up_file, {})

    def bootstrap_state(self) -> dict[str, Any]:
        return _read_json(self.bootstrap_file, {"state": "pending"})

    def dataset_dirs(self) -> list[str]:
        """Where this boot's datasets are, in DATASETS order (none before the bootstrap placed them)."""
        try:
            return [d["path"] for d in json.loads(self.datasets_file.read_text())]
        except (OSError, ValueError):
            return []


def _read_json(path: Path, missing: dict[str, Any]) -> dict[str, Any]:
    """A record as last written (whole: every writer replaces it atomically), or `missing` when there is none."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return missing
