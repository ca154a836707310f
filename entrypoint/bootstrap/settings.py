"""REPO_*, GIT_*, hook and requirements variables: the bootstrap steps the entrypoint runs before services."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from entrypoint.fields import AbsPath, ControlSecret, CsvList, OptAbsPath
from entrypoint.schema import Section
from entrypoint.workspace import under


class BootstrapSettings(Section):
    """Bootstrap: your code in place, its requirements installed, your hooks run."""

    repo_url: str = Field("", description="Git repository cloned into REPO_DIR at boot (https://, ssh or file://).")
    repo_dir: AbsPath = Field(**under("repo"), description="Where the repository lives (on the volume).")
    repo_ref: str = Field("", description="Branch, tag or commit to check out (default: the remote's default).")
    git_auto_pull: bool = Field(False, description="Fast-forward an existing checkout at every boot.")
    git_token: ControlSecret = Field(None, description="Token for a private repository (never written to disk).")
    git_username: str = Field("x-access-token", description="User name sent with GIT_TOKEN (oauth2 for GitLab).")
    requirements_install: bool = Field(True, description="pip install the repo's requirements.txt when it changed.")
    requirements_target: Literal["venv", "system"] = Field(
        "venv", description="Where requirements go: venv (USER_VENV, used by the job, SSH sessions and Jupyter "
                            "kernels; podvisor's own stays private) or system (the image's python3).",
    )
    user_venv: AbsPath = Field(
        **under(".venv"), description="The user's virtualenv, on the volume; it sees the image's packages "
                                              "(torch) too.",
    )
    pre_start_script: OptAbsPath = Field(None, description="Script run before the services start.")
    provisioning_script: str = Field(
        "", description="Vast's name: a script run like PRE_START_SCRIPT, after it; an absolute path or an "
                        "http(s) URL, downloaded first.",
    )
    post_start_script: OptAbsPath = Field(None, description="Script run once every service is up.")
    hooks_strict: bool = Field(False, description="A failing hook stops the boot instead of being reported.")
    datasets: CsvList = Field(
        default_factory=list,
        description="Dataset versions fetched and verified into DATASETS_DIR before the job starts, once per "
                    "version: hf://datasets/OWNER/REPO/NAME@VERSION or @latest, comma-separated (`podvisor data "
                    "publish` makes them). The job gets their folders in PODVISOR_DATASET_DIRS.",
    )
    datasets_dir: AbsPath = Field(**under("datasets"), description="Where DATASETS go (on the volume): "
                                                                            "DATASETS_DIR/NAME/VERSION.")

    @field_validator("datasets")
    @classmethod
    def _datasets(cls, values: list[str]) -> list[str]:
        from entrypoint.datasets import DatasetError, DatasetRef

        for value in values:
            try:
                DatasetRef.parse(value)
            except DatasetError as exc:
                raise ValueError(str(exc)) from None
        return values

    @field_validator("provisioning_script")
    @classmethod
    def _script(cls, value: str) -> str:
        if value and not (value.startswith(("https://", "http://")) or Path(value).is_absolute()):
            raise ValueError(f"{value!r} is neither an absolute path nor a URL; expected /path/to/script.sh or "
                             "https://host/script.sh")
        return value

    @field_validator("repo_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not (value.startswith(("https://", "http://", "ssh://", "git@", "file://"))):
            raise ValueError(f"{value.split('@')[-1]!r} is not a git URL; expected https://host/owner/repo.git, "
                             "git@host:owner/repo.git or file:///path")
        if "://" in value and "@" in value.split("://", 1)[1].split("/", 1)[0]:
            raise ValueError("the URL carries credentials; expected the URL without them, and the token in GIT_TOKEN")
        return value
