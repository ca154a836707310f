"""The peer for the inference benchmark: LitServe serving the same TorchScript model, with its own dynamic
batching. `python -m bench.litserve_app MODEL PORT MAX_BATCH`."""
from __future__ import annotations

import sys

import litserve as ls
import torch


class TorchScriptAPI(ls.LitAPI):
    def __init__(self, path: str, max_batch: int) -> None:
        super().__init__(max_batch_size=max_batch, batch_timeout=0.005 if max_batch > 1 else 0.0)
        self.path = path

    def setup(self, device: str) -> None:
        torch.set_num_threads(1)
        self.model = torch.jit.load(self.path, map_location=device).eval()

    def decode_request(self, request: dict) -> torch.Tensor:
        return torch.tensor(request["inputs"]["x"])

    def batch(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(inputs)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x)

    def unbatch(self, output: torch.Tensor) -> list[torch.Tensor]:
        return list(output.split(1))

    def encode_response(self, output: torch.Tensor) -> dict:
        return {"outputs": output.tolist()}


if __name__ == "__main__":
    model, port, max_batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    server = ls.LitServer(TorchScriptAPI(model, max_batch), accelerator="cpu", workers_per_device=1)
    server.run(port=port, host="127.0.0.1", generate_client_file=False)
