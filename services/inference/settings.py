"""INFERENCE_* variables."""
from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from entrypoint.fields import CsvList, Port
from entrypoint.schema import Section

DTYPES = ("", "float32", "float16", "bfloat16")


class InferenceSettings(Section):
    """Inference API (FastAPI + uvicorn) for the newest model the pod has trained."""

    inference_enabled: bool = Field(True, description="Run the inference API.")
    inference_port: Port = Field(8000, description="Port the API listens on.")
    inference_model_path: Path | None = Field(None, description="Serve this model file (else the newest in the dir).")
    inference_model_dir: Path = Field(Path("/workspace/models"), description="Folder searched for the newest model.")
    inference_model_glob: CsvList = Field(default_factory=lambda: ["*.pt", "*.pth", "*.ts", "*.pt2"],
                                          description="Model file patterns in INFERENCE_MODEL_DIR.")
    inference_handler: str = Field("", description="package.module:factory(path, device) -> callable on a batch.")
    inference_device: str = Field("auto", description="auto (CUDA when available), cpu, cuda or cuda:N.")
    inference_dtype: str = Field("", description="Cast the model and float inputs to float32/float16/bfloat16.")
    inference_warmup_shapes: str = Field(
        "", description="Warm-up inputs as name=shape, e.g. x=1x16;mask=1x16 (zeros); export models need none."
    )
    inference_api_token: SecretStr | None = Field(None, description="Bearer token required on every endpoint but /healthz.")
    inference_allow_unauthenticated: bool = Field(
        False, description="Listen beyond 127.0.0.1 without a token (unsafe)."
    )
    inference_max_batch: int = Field(32, ge=1, le=4096, description="Most requests run together in one batch.")
    inference_max_wait_ms: float = Field(
        2, ge=0, le=1000, description="Longest wait for more requests already arriving, to fill a batch."
    )
    inference_max_body_mb: float = Field(16, gt=0, le=4096, description="Largest request body accepted.")
    inference_reload_seconds: float = Field(5, gt=0, le=3600, description="How often to look for a newer model.")

    @field_validator("inference_handler")
    @classmethod
    def _handler(cls, value: str) -> str:
        if value and not re.fullmatch(r"[\w.]+:\w+", value):
            raise ValueError(f"{value!r} is not a handler reference; expected package.module:factory")
        return value

    @field_validator("inference_device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError(f"{value!r} is not a device; expected auto, cpu, cuda or cuda:N")
        return value

    @field_validator("inference_dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        if value not in DTYPES:
            raise ValueError(f"{value!r} is not a model dtype; expected float32, float16 or bfloat16")
        return value

    @field_validator("inference_warmup_shapes")
    @classmethod
    def _shapes(cls, value: str) -> str:
        if value and not re.fullmatch(r"\w+=\d+(x\d+)*(;\w+=\d+(x\d+)*)*", value):
            raise ValueError(f"{value!r} is not a list of shapes; expected name=1x16[;name=...]")
        return value

    def warmup_shapes(self) -> dict[str, list[int]]:
        pairs = [item.split("=") for item in self.inference_warmup_shapes.split(";") if item]
        return {name: [int(d) for d in shape.split("x")] for name, shape in pairs}
