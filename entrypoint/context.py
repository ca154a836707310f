"""What a service's hooks are handed: the parsed config, the detected cloud, and the state dir (`paths`)."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from entrypoint.catalog import load, public_variables, without_control
from entrypoint.cloud import CLOUD_VARIABLES, Cloud, detect
from entrypoint.files import write_atomically
from entrypoint.redact import TOKEN_LIKE
from entrypoint.schema import Config, CoreSettings, Section, env_names
from entrypoint.state_dir import StateDir
from entrypoint.workspace import default_state_dir

STOP_MARGIN_SECONDS = 2.0
"""Kept back from the stop grace for the event listener (stopped last) and supervisord's own exit."""
STOP_STEP_SECONDS = 1.0
"""What each program in the stop sequence costs beyond its own exit: supervisord notices an exit on its
once-a-second loop (a SIGCHLD does not wake it), and only then stops the next program."""
S = TypeVar("S", bound=Section)


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
    def paths(self) -> StateDir:
        """Every file of the state dir, by name, and the stack's records read from it."""
        return StateDir(self.state_dir)

    def environment_for(self, *owners: str) -> dict[str, str]:
        """The environment for the program of the `owners`' sections, or with none for the user's own code
        (SSH sessions, hooks, the job's command): the container's, less the control credentials of others."""
        return without_control(os.environ, owners, self.core.session_env_passthrough)

    def stop_deadline(self) -> float:
        """When the last program to stop (the uploader) must be gone (epoch seconds): the grace counted from
        the moment the shutdown began, less its own step and the margin, so it gets whatever the others left."""
        try:
            began = float(self.paths.stop_requested_file.read_text())
        except (OSError, ValueError):
            began = time.time()
        return began + self.core.podvisor_grace_seconds - STOP_MARGIN_SECONDS - STOP_STEP_SECONDS

    def record_environment(self) -> None:
        """The variables this stack runs with, for `podvisor status` from any shell (`running`). The ports are
        recorded as resolved: a default can depend on who asks (SSH_PORT is 22 for root, 2222 for a normal
        user), and the login user's status must probe the ports the stack listens on, not its own defaults."""
        public = public_variables()
        recorded = {key: value for key, value in os.environ.items()
                    if (key.upper() in public or CLOUD_VARIABLES.match(key)) and not TOKEN_LIKE.search(key)}
        for section in self.config.sections.values():
            for fname, info in type(section).model_fields.items():
                if fname.endswith("_port") and isinstance(getattr(section, fname), int):
                    recorded[env_names(fname, info)[0]] = str(getattr(section, fname))
        write_atomically(self.paths.environment_record_file, json.dumps(recorded, indent=2, sort_keys=True))


def running() -> PodContext:
    """The running stack's context, from any shell: the variables `start` recorded in the state dir (found from
    PODVISOR_STATE_DIR, else the default) win over the caller's, whose secrets still serve the probes."""
    try:
        state_dir = CoreSettings().podvisor_state_dir
    except ValidationError:  # the caller's own value is malformed: `current()` below says so
        state_dir = default_state_dir()
    try:
        os.environ.update(json.loads(StateDir(state_dir).environment_record_file.read_text()))
    except (OSError, ValueError):
        pass  # no stack has started with this state dir: the caller's environment is all there is
    return current()


def current() -> PodContext:
    """The context of this process, built from its environment (status and services use this)."""
    config = load()
    forced = config.core.podvisor_provider if config.core else "auto"
    return PodContext(config, detect(os.environ, forced), os.environ.get("PODVISOR_RUN_ID", ""))
