"""INFERENCE_* variables."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from entrypoint.fields import AbsPath, CsvList, OptAbsPath, Port, Secret, matching
from entrypoint.schema import Section
from entrypoint.workspace import under

HandlerRef = Annotated[str, matching(r"[\w.]+:\w+", "package.module:factory", allow_empty=True)]
DeviceName = Annotated[str, matching(r"auto|cpu|cuda(:\d+)?", "auto, cpu, cuda or cuda:N")]
WarmupShapes = Annotated[str, matching(r"\w+=\d+(x\d+)*(;\w+=\d+(x\d+)*)*", "name=1x16[;name=...]", allow_empty=True)]


class InferenceSettings(Section):
    """Inference API (FastAPI + uvicorn) for the newest model the pod has trained."""

    inference_enabled: bool = Field(True, description="Run the inference API.")
    inference_port: Port = Field(8000, description="Port the API listens on.")
    inference_model_path: OptAbsPath = Field(None, description="Serve this model file (else the newest in the dir).")
    inference_model_dir: AbsPath = Field(**under("models"), description="Folder searched for the newest model.")
    inference_model_glob: CsvList = Field(default_factory=lambda: ["*.pt", "*.pth", "*.ts", "*.pt2"],
                                          description="Model file patterns in INFERENCE_MODEL_DIR.")
    inference_handler: HandlerRef = Field(
        "", description="package.module:factory(path, device) -> callable on a batch.")
    inference_device: DeviceName = Field(
        "auto", description="auto (CUDA when available), cpu, cuda or cuda:N.")
    inference_dtype: Literal["", "float32", "float16", "bfloat16"] = Field(
        "", description="Cast the model and float inputs to float32/float16/bfloat16.")
    inference_warmup_shapes: WarmupShapes = Field(
        "", description="Warm-up inputs as name=shape, e.g. x=1x16;mask=1x16 (zeros); export models need none."
    )
    inference_api_token: Secret = Field(
        None, description="Bearer token required on every endpoint but /healthz. Unset: one is generated, the API "
                          "listens on 127.0.0.1 only, and `podvisor status` says where to read the token."
    )
    inference_allow_unauthenticated: bool = Field(
        False, description="Answer without a token, beyond 127.0.0.1 too (unsafe); /reload still needs the token."
    )
    inference_max_batch: int = Field(32, ge=1, le=4096, description="Most requests run together in one batch.")
    inference_max_wait_ms: float = Field(
        2, ge=0, le=1000, description="Longest wait for more requests already arriving, to fill a batch."
    )
    inference_max_body_mb: float = Field(16, gt=0, le=4096, description="Largest request body accepted.")
    inference_keep_alive_seconds: int = Field(
        5, gt=0, le=3600, description="An idle keep-alive connection is closed after this long.")
    inference_header_timeout_seconds: float = Field(
        10, gt=0, le=3600, description="A request's head (its line and headers) must arrive within this long, or "
                                       "the connection is closed: slow or silent clients hold nothing.")
    inference_reload_seconds: float = Field(5, gt=0, le=3600, description="How often to look for a newer model.")

    def warmup_shapes(self) -> dict[str, list[int]]:
        pairs = [item.split("=") for item in self.inference_warmup_shapes.split(";") if item]
        return {name: [int(d) for d in shape.split("x")] for name, shape in pairs}
