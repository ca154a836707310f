"""UPLOAD_* variables, the destinations' credentials, and RESTORE_*."""
from __future__ import annotations


from pydantic import AliasChoices, Field, field_validator

from entrypoint.fields import CsvList, CsvPaths, Secret, not_placeholder
from entrypoint.schema import Section
from entrypoint.workspace import under

DEFAULT_INCLUDE = ["*.pt", "*.pth", "*.safetensors", "*.bin", "*.ckpt", "*.json", "*.yaml", "*.yml", "*.txt",
                   "*.model", "*.npy", "*.npz", "*.msgpack", "*.pkl", "*.log", "*.distcp"]
DEFAULT_EXCLUDE = ["*.tmp", "*.partial", "*.part", "*~", ".*", "*.swp", "*.lock", "__pycache__"]


class UploadSettings(Section):
    """Checkpoint uploader: every fully written checkpoint, once, verified, to every destination."""

    upload_enabled: bool = Field(True, description="Run the checkpoint uploader.")
    upload_watch_dirs: CsvPaths = Field(
        **under("checkpoints", many=True),
        description="Folders watched recursively (comma-separated); each subfolder is one checkpoint.",
    )
    upload_destinations: CsvList = Field(
        default_factory=list,
        description="Where checkpoints go (comma-separated): hf://[datasets/]owner/repo[@rev][/prefix], "
                    "rclone:remote:path, s3://bucket/prefix, file:///path.",
    )
    upload_include: CsvList = Field(default_factory=lambda: list(DEFAULT_INCLUDE),
                                    description="Glob patterns of files to upload.")
    upload_exclude: CsvList = Field(default_factory=lambda: list(DEFAULT_EXCLUDE),
                                    description="Glob patterns never uploaded (temp names of writers).")
    upload_settle_seconds: float = Field(
        5, ge=0, le=3600, description="A file counts as complete once closed and unchanged for this long."
    )
    upload_sentinel: str = Field(
        "", description="A checkpoint folder counts as complete only once this file is in it (trainer_state.json)."
    )
    upload_detect_frameworks: bool = Field(
        True, description="A checkpoint folder counts as complete only once its framework's last file is there: "
                          "trainer_state.json (HF Trainer), .metadata (torch.distributed.checkpoint), every shard "
                          "of a safetensors index."
    )
    upload_stall_seconds: float = Field(
        30, ge=5, le=3600, description="A transfer that moves no byte for this long is cut and its destination "
                                       "marked failing (a black-hole endpoint never hangs the uploader)."
    )
    upload_polling: bool = Field(False, description="Poll instead of inotify (network filesystems).")
    upload_rescan_seconds: float = Field(
        30, ge=1, le=86400, description="Full rescan period, catching what events missed."
    )
    upload_retry_max_seconds: float = Field(
        300, ge=1, le=86400, description="Cap of the exponential backoff between attempts."
    )
    upload_keep_last_local: int = Field(
        0, ge=0, description="Keep this many newest local checkpoints, deleting older durable ones (0: keep all)."
    )
    upload_keep_last_remote: int = Field(
        0, ge=0, description="Keep this many newest checkpoints at each destination (0: keep all)."
    )
    upload_hf_private: bool = Field(True, description="Create a missing Hugging Face repo as private.")
    restore_on_start: bool = Field(
        True, description="With no local checkpoint at boot, fetch the newest committed checkpoint from the "
                          "destinations, verified file by file, falling back to older ones."
    )
    restore_required: bool = Field(
        True, description="With destinations set and none of them reachable at boot, hold the job (SSH and the "
                          "rest stay up) instead of starting it from scratch; retried until one answers."
    )
    restore_timeout_seconds: float = Field(
        30, ge=1, le=3600, description="How long a destination may take to list its checkpoints at restore."
    )
    hf_token: Secret = Field(None, validation_alias=AliasChoices("hf_token", "hugging_face_hub_token"),
                             description="Hugging Face token (write access to the repo).")
    hf_hub_enable_hf_transfer: bool = Field(
        False, description="Legacy fast-transfer switch; taken as HF_XET_HIGH_PERFORMANCE=1 (hf_xet)."
    )
    aws_access_key_id: str = Field("", description="S3 access key, for s3:// destinations.")
    aws_secret_access_key: Secret = Field(None, description="S3 secret key, for s3:// destinations.")
    aws_region: str = Field("", description="S3 region, for s3:// destinations.")
    aws_endpoint_url: str = Field("", description="S3-compatible endpoint (R2, MinIO, B2...), for s3:// destinations.")

    @field_validator("upload_destinations")
    @classmethod
    def _parse_destinations(cls, values: list[str]) -> list[str]:
        from services.uploader.destinations import parse

        not_placeholder(values)
        for value in values:
            parse(value)
        return values

    @field_validator("aws_endpoint_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not a URL; expected http(s)://host[:port]")
        return value
