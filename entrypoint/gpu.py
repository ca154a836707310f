"""GPU inventory through NVML (nvidia-ml-py); "no GPU" is an answer, not an error, on CPU-only hosts."""
from __future__ import annotations

from typing import Any


def inventory() -> tuple[list[dict[str, Any]], str]:
    """(one dict per GPU, a one-line summary); NVML absent or failing gives ([], "no GPU (...)")."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # the library is missing, or no driver: both mean "no GPU" here
        return [], f"no GPU (NVML unavailable: {type(exc).__name__})"
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            util = pynvml.nvmlDeviceGetUtilizationRates(handle)
            gpus.append({
                "index": index,
                "name": _text(pynvml.nvmlDeviceGetName(handle)),
                "uuid": _text(pynvml.nvmlDeviceGetUUID(handle)),
                "memory_total_mb": memory.total // 2**20,
                "memory_used_mb": memory.used // 2**20,
                "utilization_percent": util.gpu,
                "driver": driver,
            })
        summary = ", ".join(f"gpu{g['index']} {g['name']} {g['utilization_percent']} %" for g in gpus) or "no GPU"
        return gpus, summary
    finally:
        pynvml.nvmlShutdown()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
