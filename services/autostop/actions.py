"""Stop actions, tried in the order AUTOSTOP_ACTION gives until one works.

API keys travel only in `Authorization: Bearer` headers to their own provider's host: never in a URL (the
settings drop any query from the base URLs), a command line or a log line."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from urllib.parse import urlsplit

import requests

from entrypoint.context import PodContext
from entrypoint.provider_http import problem, session
from services.autostop.settings import AutostopSettings

log = logging.getLogger("autostop")


class ActionFailed(RuntimeError):
    pass


def http(method: str, url: str, key: str, json: dict | None = None) -> dict:
    """One API call (the provider-wide HTTP layer retries outages; a stop may be asked again, so its POST is
    retried too); raises ActionFailed naming the status and the provider's reason, never the key."""
    try:
        response = session(key, also_retry=frozenset({"POST"})).request(method, url, json=json, timeout=15)
    except requests.RequestException as exc:
        raise ActionFailed(f"{method} {urlsplit(url).path}: {type(exc).__name__}") from None
    if response.status_code >= 400:
        raise ActionFailed(f"{method} {urlsplit(url).path}: HTTP {response.status_code} {problem(response, key)}")
    body = response.json() if response.content else {}
    if isinstance(body, dict) and body.get("errors"):  # GraphQL answers 200 with its errors
        raise ActionFailed(f"{method} {urlsplit(url).path}: API errors {str(body['errors'])[:200]}")
    return body if isinstance(body, dict) else {"result": body}


def _secret(value) -> str:
    return value.get_secret_value() if value else ""


class Actions:
    def __init__(self, ctx: PodContext, settings: AutostopSettings, alive_for: Callable[[float], None]) -> None:
        self.ctx, self.settings = ctx, settings
        self.wait_for_stop = alive_for
        """Waits up to N seconds for the provider to stop this container; returning means it did not."""

    def run(self, names: list[str]) -> str:
        """Try each action in order; returns the one that worked, raises when none did."""
        failures = []
        for name in names:
            try:
                getattr(self, name)()
                return name
            except Exception as exc:
                failures.append(f"{name}: {exc}")
                log.error("stop action %s failed: %s; trying the next one", name, exc)
        raise ActionFailed("; ".join(failures) or "no stop action configured")

    def missing(self, name: str) -> str | None:
        """What action `name` lacks to work at all (the pod's id, a key, a command), or None: asked at boot too,
        so an action that could never work is said then, not once the pod is due to stop."""
        s = self.settings
        if name == "runpod" and not (self.ctx.cloud.pod_id("runpod") and
                                     (_secret(s.autostop_runpod_api_key) or _secret(s.runpod_api_key))):
            return "needs RUNPOD_POD_ID and RUNPOD_API_KEY (or AUTOSTOP_RUNPOD_API_KEY)"
        if name == "vast" and not (self.ctx.cloud.pod_id("vast") and
                                   (_secret(s.vast_api_key) or _secret(s.container_api_key))):
            return "needs CONTAINER_ID and CONTAINER_API_KEY (or VAST_API_KEY)"
        if name == "command" and not s.autostop_command:
            return "needs AUTOSTOP_COMMAND, which is empty"
        return None

    # -- RunPod ---------------------------------------------------------------------------------------------
    def runpod(self) -> None:
        if (lack := self.missing("runpod")):
            raise ActionFailed(lack)
        s, pod = self.settings, self.ctx.cloud.pod_id("runpod")
        assert pod is not None, "missing() said the pod id is known"
        key = _secret(s.autostop_runpod_api_key) or _secret(s.runpod_api_key)
        verb = "terminate" if s.autostop_terminate else "stop"
        # REST v2's one lifecycle route first; GraphQL (retiring in 2027) and runpodctl only when it fails.
        attempts: list[tuple[str, Callable[[], object]]] = [
            ("rest v2", lambda: http("POST", f"{s.runpod_api_url.rstrip('/')}/pods/{pod}/action", key,
                                     {"action": verb}))]
        mutation = (f'mutation {{ podTerminate(input: {{podId: "{pod}"}}) }}' if s.autostop_terminate else
                    f'mutation {{ podStop(input: {{podId: "{pod}"}}) {{ id desiredStatus }} }}')
        attempts.append(("graphql", lambda: http("POST", s.runpod_graphql_url, key, {"query": mutation})))
        if shutil.which("runpodctl"):
            attempts.append(("runpodctl", lambda: self._runpodctl(pod, key)))
        self._first_that_works(f"runpod {verb}", attempts)

    def _runpodctl(self, pod: str, key: str) -> None:
        verb = ["remove", "pod"] if self.settings.autostop_terminate else ["stop", "pod"]
        result = subprocess.run(["runpodctl", *verb, pod], env={**os.environ, "RUNPOD_API_KEY": key},
                                capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise ActionFailed(f"runpodctl exited {result.returncode}")

    # -- Vast.ai --------------------------------------------------------------------------------------------
    def vast(self) -> None:
        if (lack := self.missing("vast")):
            raise ActionFailed(lack)
        s = self.settings
        instance = self.ctx.cloud.pod_id("vast")
        key = _secret(s.vast_api_key) or _secret(s.container_api_key)
        url = f"{s.vast_api_url.rstrip('/')}/instances/{instance}/"
        if s.autostop_terminate:
            call = lambda: http("DELETE", url, key)  # noqa: E731
        else:
            call = lambda: http("PUT", url, key, {"state": "stopped"})  # noqa: E731
        self._first_that_works("vast " + ("terminate" if s.autostop_terminate else "stop"), [("api", call)])

    def _first_that_works(self, what: str, attempts: list[tuple[str, Callable[[], object]]]) -> None:
        errors = []
        for how, call in attempts:
            try:
                call()
            except Exception as exc:
                errors.append(f"{how}: {exc}")
                continue
            log.warning("%s requested through %s; waiting for it to take effect", what, how)
            # The provider stops the container from outside. Exiting instead would make RunPod restart it;
            # so sshd stays up while we wait, and a stop that never comes is reported.
            self.wait_for_stop(self.settings.autostop_stop_timeout_seconds)
            raise ActionFailed(f"{what} was accepted through {how} but the pod is still running after "
                               f"{self.settings.autostop_stop_timeout_seconds:.0f} s")
        raise ActionFailed("; ".join(errors))

    # -- local ----------------------------------------------------------------------------------------------
    def exit(self) -> None:
        """Stop supervisord: every service stops in order and the container exits (a Job, `docker run --rm`): 0, or
        the exit code of a job that failed."""

        self.ctx.paths.supervisor().supervisor.shutdown()

    def command(self) -> None:
        if (lack := self.missing("command")):
            raise ActionFailed(lack)
        result = subprocess.run(self.settings.autostop_command, shell=True, timeout=300)
        if result.returncode != 0:
            raise ActionFailed(f"AUTOSTOP_COMMAND exited {result.returncode}")

    def none(self) -> None:
        log.warning("dry-run (AUTOSTOP_ACTION=none): this is where the pod would be stopped")
