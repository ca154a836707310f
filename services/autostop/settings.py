"""AUTOSTOP_* variables and the provider API keys the stop actions use."""
from __future__ import annotations

import re

from pydantic import Field, field_validator

from entrypoint.fields import ControlSecret, CsvList, OptAbsPath
from entrypoint.provider_urls import RUNPOD_API_URL, RUNPOD_GRAPHQL_URL, VAST_API_URL
from entrypoint.schema import Section

ACTIONS = ("auto", "runpod", "vast", "exit", "command", "none")


class AutostopSettings(Section):
    """Idle autostop: stop an idle pod, never a busy one, never with uploads pending."""

    autostop_enabled: bool = Field(True, description="Run the idle-autostop watchdog.")
    autostop_idle_minutes: float = Field(60, gt=0, le=10080, description="Idle time before the stop warning.")
    autostop_warn_seconds: float = Field(300, ge=0, le=86400,
                                         description="Warning time between the notice and the stop.")
    autostop_grace_seconds: float = Field(600, ge=0, le=86400, description="Nothing is stopped this soon after boot.")
    autostop_poll_seconds: float = Field(30, gt=0, le=3600, description="How often activity is evaluated.")
    autostop_action: CsvList = Field(
        default_factory=lambda: ["auto"],
        description="Stop actions tried in order: runpod, vast, exit, command, none (dry-run); auto picks by provider.",
    )
    autostop_command: str = Field("", description="Shell command run by the `command` action.")
    autostop_terminate: bool = Field(False, description="Terminate (delete) the pod instead of stopping it.")
    autostop_gpu_util_percent: float = Field(5, ge=0, le=100, description="GPU utilization above this is activity.")
    autostop_gpu_memory_counts: bool = Field(False, description="Count GPU memory merely held as activity.")
    autostop_cpu_percent: float = Field(60, ge=0, le=100, description=(
        "This container's CPU (its cgroup) above this share of the CPUs it may use is activity (0: off); other "
        "tenants of a shared host never count."))
    autostop_heartbeat_file: OptAbsPath = Field(None, description="A file your code touches to say it is alive.")
    autostop_busy_processes: str = Field(
        "", description="Regex over process command lines that count as activity (e.g. train.py|torchrun)."
    )
    autostop_max_upload_wait_minutes: float = Field(
        60, ge=0, le=10080,
        description="How long a due stop waits for failing uploads; then it stops only if every checkpoint is "
                    "held by some destination, else keeps the pod and says why (0: wait forever).",
    )
    autostop_stop_timeout_seconds: float = Field(
        300, gt=0, le=86400, description="How long to wait for a provider stop to take effect before reporting failure."
    )
    autostop_runpod_api_key: ControlSecret = Field(
        None, description="Your RunPod API key; overrides the pod-scoped RUNPOD_API_KEY RunPod injects."
    )
    runpod_api_key: ControlSecret = Field(None, description="Pod-scoped RunPod key (injected by RunPod).")
    runpod_api_url: str = Field(RUNPOD_API_URL, description="RunPod REST API v2 base URL.")
    runpod_graphql_url: str = Field(RUNPOD_GRAPHQL_URL, description="RunPod GraphQL endpoint (a fallback).")
    vast_api_key: ControlSecret = Field(None, description="Your Vast.ai API key; overrides CONTAINER_API_KEY.")
    container_api_key: ControlSecret = Field(None, description="Instance-scoped Vast.ai key (injected by Vast).")
    vast_api_url: str = Field(VAST_API_URL, description="Vast.ai API base URL.")

    @field_validator("autostop_action")
    @classmethod
    def _actions(cls, values: list[str]) -> list[str]:
        unknown = [v for v in values if v not in ACTIONS]
        if unknown:
            raise ValueError(f"{', '.join(map(repr, unknown))} is not a stop action; expected a list of "
                             f"{', '.join(ACTIONS)}")
        return values or ["auto"]

    @field_validator("autostop_busy_processes")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{value!r} is not a regular expression ({exc}); "
                             "expected e.g. train.py|torchrun") from None
        return value

    @field_validator("runpod_api_url", "runpod_graphql_url", "vast_api_url")
    @classmethod
    def _url(cls, value: str) -> str:
        """A base URL, its query dropped: an `?api_key=` copied from a provider's docs would put the key in
        every URL (and so in proxy and server logs); keys go only in the Authorization header."""
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value.split('?')[0]!r} is not a URL; expected http(s)://host/path")
        return value.split("?", 1)[0]

    def actions(self, provider: str) -> list[str]:
        """The action list with `auto` resolved for this provider."""
        auto = {"runpod": ["runpod"], "vast": ["vast"], "kubernetes": ["exit"], "docker": ["exit"]}
        out: list[str] = []
        for action in self.autostop_action:
            out += auto.get(provider, ["none"]) if action == "auto" else [action]
        return out
