"""JOB_* variables, and the W&B ones a training job reads."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from entrypoint.fields import OptAbsPath, Port, Secret, matching
from entrypoint.schema import Section

ProcessCount = Annotated[str, matching(r"auto|[1-9]\d{0,2}", "auto or a number from 1")]

class JobSettings(Section):
    """Training job: run JOB_COMMAND as the login user, resume it, and stop the pod when it is done."""

    job_command: str = Field("", description="The training command (runs when set), e.g. python train.py --lr 3e-4.")
    job_workdir: OptAbsPath = Field(None, description="Where the job runs (default: REPO_DIR, else the workspace).")
    job_restart: Literal["never", "on-failure"] = Field("on-failure", description="Restart policy after a failure.")
    job_max_restarts: int = Field(3, ge=0, le=1000, description="Restarts after failures before the job is failed.")
    job_resume_args: str = Field(
        "", description="Appended when resuming, {checkpoint} replaced by the path, e.g. --resume {checkpoint}."
    )
    job_checkpoint_dir: OptAbsPath = Field(
        None, description="Where the job writes checkpoints (default: the first UPLOAD_WATCH_DIRS)."
    )
    job_nproc: ProcessCount = Field(
        "1", description="Processes per node: 1, a number, or auto (one per GPU, via torchrun).")
    job_nnodes: int | None = Field(
        None, ge=1, le=4096, description="Nodes in the training cluster (default: what the platform says: RunPod "
                                         "Instant Clusters, Kubeflow PyTorchJob, SkyPilot; else 1).")
    job_node_rank: int | None = Field(
        None, ge=0, description="This node's rank, 0 to JOB_NNODES-1 (default: the platform's, or a Kubernetes "
                                "indexed Job's JOB_COMPLETION_INDEX).")
    job_master_addr: str = Field(
        "", description="Where the nodes meet (torchrun's c10d rendezvous on node 0), e.g. trainer-0.trainer "
                        "(default: the platform's).")
    job_master_port: Port | None = Field(None, description="The rendezvous port on node 0 (default: the platform's, "
                                                           "else 29500).")
    job_rdzv_timeout_seconds: int = Field(
        900, ge=10, le=86400, description="How long the nodes wait for each other to join the rendezvous.")
    job_on_exit: Literal["stay", "stop"] = Field(
        "stay", description="stop: once the job ends and uploads drained, stop the pod via AUTOSTOP_ACTION."
    )
    wandb_api_key: Secret = Field(None, description="Weights & Biases key (passed to the job, never logged).")
    wandb_mode: str = Field("", description="W&B mode; defaults to offline when no WANDB_API_KEY is set.")

    @field_validator("job_resume_args")
    @classmethod
    def _resume(cls, value: str) -> str:
        if value and "{checkpoint}" not in value:
            raise ValueError(f"{value!r} does not say where the checkpoint goes; expected e.g. --resume {{checkpoint}}")
        return value
