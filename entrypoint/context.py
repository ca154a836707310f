"""What a service's hooks are handed: the parsed config, the detected cloud and the state dir layout."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from entrypoint.catalog import load, public_variables, without_control
from entrypoint.cloud import CLOUD_VARIABLES, Cloud, detect
from entrypoint.files import write_atomically
from entrypoint.redact import TOKEN_LIKE
from entrypoint.schema import Config, CoreSettings, Section, default_state_dir

STOP_MARGIN_SECONDS = 2.0
"""Kept back from the stop grace for the event listener (stopped last) and supervisord's own exit."""
STOP_STEP_SECONDS = 1.0
"""What each program in the stop sequence costs beyond its own exit: supervisord notices an exit on its
once-a-second loop (a SIGCHLD does not wake it), and only then stops the next program."""
S = TypeVar("S", bound=Section)
ENVIRONMENT_RECORD = "environment.json"
"""In the state dir: read by `running()` before any context exists, written through `PodContext`."""
SOCKET_PATH_MAX = 100
"""AF_UNIX paths are limited to 108 bytes; a deep state dir gets its socket under /tmp instead."""


@dataclass
class PodContext:
    config: Config
    cloud: Cloud
    run_id: str = ""

    @property
    def core(self) -> CoreSettings:
        assert self.config.core is not None, "the core section is invalid"
        return self.config.core

    def settings(self, cls: type[S]) -> S:
        """The valid section of class `cls`, typed as that class (no casts where it is used). A service's own
        section is always valid: an invalid one disables the service, so its code does not run."""
        found = self.optional_settings(cls)
        if found is None:
            raise KeyError(f"the {cls.__name__} section is invalid")
        return found

    def optional_settings(self, cls: type[S]) -> S | None:
        """The section of class `cls`, or None when it is invalid: for one service asking about another."""
        return next((section for section in self.config.sections.values() if isinstance(section, cls)), None)

    @property
    def state_dir(self) -> Path:
        return self.core.podvisor_state_dir

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def service_dir(self, name: str) -> Path:
        """A service's own state (queues, stamps, host keys), kept on the volume across restarts."""
        return self.state_dir / "services" / name

    def heartbeat_file(self, name: str) -> Path:
        """A file service `name` touches on activity (API requests); the idle autostop reads its mtime."""
        return self.state_dir / "heartbeats" / name

    @property
    def supervisord_conf(self) -> Path:
        return self.state_dir / "supervisord.conf"

    @property
    def credentials_file(self) -> Path:
        return self.state_dir / "supervisor.auth"

    @property
    def stop_requested_file(self) -> Path:
        """Written (epoch seconds) by the event listener when supervisord begins to shut down."""
        return self.state_dir / "stop_requested"

    def environment_for(self, *owners: str) -> dict[str, str]:
        """The environment for the program of the `owners`' sections, or with none for the user's own code
        (SSH sessions, hooks, the job's command): the container's, less the control credentials of others."""
        return without_control(os.environ, owners, self.core.session_env_passthrough)

    def stop_deadline(self) -> float:
        """When the last program to stop (the uploader) must be gone (epoch seconds): the grace counted from
        the moment the shutdown began, less its own step and the margin, so it gets whatever the others left."""
        try:
            began = float(self.stop_requested_file.read_text())
        except (OSError, ValueError):
            began = time.time()
        return began + self.core.podvisor_grace_seconds - STOP_MARGIN_SECONDS - STOP_STEP_SECONDS

    @property
    def boot_file(self) -> Path:
        """What this boot started and disabled, and why ({"run_id", "started_epoch_ms", "services", "disabled"}),
        written by `start`: the one record of which services are active."""
        return self.state_dir / "boot.json"

    def boot(self) -> dict:
        try:
            return json.loads(self.boot_file.read_text())
        except (OSError, ValueError):
            return {}

    def active_services(self) -> list[str] | None:
        """The services this boot started (a prepare step may have disabled an enabled one); None before `start`
        has written it."""
        return self.boot().get("services")

    @property
    def given_up_file(self) -> Path:
        """{service: why} for programs the event listener left down after repeated failed starts."""
        return self.state_dir / "given_up.json"

    @property
    def processes_file(self) -> Path:
        """supervisord's process table as the event listener last saw it ({"supervisord_pid", "processes"}),
        readable by all: `podvisor status` for a login user the control socket is not shared with."""
        return self.state_dir / "processes.json"

    @property
    def environment_record_file(self) -> Path:
        """The stack's own variables (schema and provider, never a secret), recorded by `start`, so `podvisor
        status` from any shell (a `docker exec`, a second terminal) sees the running stack as it is."""
        return self.state_dir / ENVIRONMENT_RECORD

    def record_environment(self) -> None:
        public = public_variables()
        recorded = {key: value for key, value in os.environ.items()
                    if (key.upper() in public or CLOUD_VARIABLES.match(key)) and not TOKEN_LIKE.search(key)}
        write_atomically(self.environment_record_file, json.dumps(recorded, indent=2, sort_keys=True))

    def given_up(self) -> dict[str, str]:
        try:
            return json.loads(self.given_up_file.read_text())
        except (OSError, ValueError):
            return {}

    @property
    def bootstrap_file(self) -> Path:
        """The bootstrap's progress ({"state": running|done|failed, "step", "step_started", "started"}): it runs
        beside sshd and Jupyter, and what needs the repo (the job, the post-start hook) waits for "done"."""
        return self.state_dir / "bootstrap.json"

    def bootstrap_state(self) -> dict:
        try:
            return json.loads(self.bootstrap_file.read_text())
        except (OSError, ValueError):
            return {"state": "pending"}

    @property
    def exit_code_file(self) -> Path:
        """The exit code the container should end with, then why (a job that failed, a strict hook): `start`
        exits with it once supervisord is done, so a failed Kubernetes Job shows Failed, not Completed."""
        return self.state_dir / "exit_code"

    @property
    def timings_file(self) -> Path:
        return self.state_dir / "timings.jsonl"

    @property
    def socket_path(self) -> Path:
        path = self.state_dir / "supervisor.sock"
        if len(str(path)) <= SOCKET_PATH_MAX:
            return path
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"podvisor-{digest}.sock"


def running() -> PodContext:
    """The running stack's context, from any shell: the variables `start` recorded in the state dir (found from
    PODVISOR_STATE_DIR, else the default) win over the caller's, whose secrets still serve the probes."""
    try:
        state_dir = CoreSettings().podvisor_state_dir
    except ValidationError:  # the caller's own value is malformed: `current()` below says so
        state_dir = default_state_dir()
    try:
        os.environ.update(json.loads((state_dir / ENVIRONMENT_RECORD).read_text()))
    except (OSError, ValueError):
        pass  # no stack has started with this state dir: the caller's environment is all there is
    return current()


def current() -> PodContext:
    """The context of this process, built from its environment (status and services use this)."""
    config = load()
    forced = config.core.podvisor_provider if config.core else "auto"
    return PodContext(config, detect(os.environ, forced), os.environ.get("PODVISOR_RUN_ID", ""))
