"""Dynamic batching: requests that arrive together run as one batch, off the event loop.

The batcher never waits for traffic that is not there: it takes what is queued now, and waits up to
INFERENCE_MAX_WAIT_MS only for requests already being received. So a lone request pays no batching delay,
and under load the requests that queue while a batch runs form the next one."""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

from services.inference.model import Signature



@dataclass
class Job:
    inputs: dict[str, Any]
    rows: int
    signature: Signature
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Batcher:
    def __init__(self, run: Callable[[dict[str, Any]], Any], max_batch: int, max_wait_ms: float,
                 observe: Callable[[int], None] = lambda size: None) -> None:
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000
        self.observe = observe
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.arriving = 0
        """Requests being received (body read, parsed) that will be queued soon."""
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="model")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def on_model_thread(self, work: Callable[..., Any], *args: Any) -> Any:
        """`work` on the thread the batches run on: the model is never called from two threads at once."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, work, *args)

    async def submit(self, inputs: dict[str, Any], signature: Signature, rows: int) -> Any:
        """Requests batch together only when their inputs match in names, dtypes and per-row shapes. With
        batching off, a request goes straight to the model thread: no queue and no batching task in between,
        two event-loop turns fewer per request."""
        if self.max_batch <= 1:
            self.observe(rows)
            return await self.on_model_thread(self.run, inputs)
        job = Job(inputs, rows, signature)
        await self.queue.put(job)
        return await job.future

    async def _collect(self) -> list[Job]:
        batch = [await self.queue.get()]
        rows = batch[0].rows
        deadline = time.monotonic() + self.max_wait
        while rows < self.max_batch:
            if not self.queue.empty():
                job = self.queue.get_nowait()
            elif self.arriving <= 0 or (left := deadline - time.monotonic()) <= 0:
                break
            else:  # woken by the next request as it is queued, not by polling
                try:
                    job = await asyncio.wait_for(self.queue.get(), left)
                except TimeoutError:
                    break
            batch.append(job)
            rows += job.rows
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            groups: dict[Signature, list[Job]] = {}
            for job in batch:
                groups.setdefault(job.signature, []).append(job)
            for jobs in groups.values():
                self.observe(sum(j.rows for j in jobs))
                try:
                    outputs = await loop.run_in_executor(self.executor, _run_group, self.run, jobs)
                except Exception as exc:  # the model failed: each request of the batch gets the error
                    for job in jobs:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                for job, output in zip(jobs, outputs, strict=True):
                    if not job.future.done():
                        job.future.set_result(output)


def _run_group(run: Callable[[dict[str, Any]], Any], jobs: list[Job]) -> list[Any]:
    """Concatenate the jobs' inputs along dim 0, run once, and split the outputs back per job."""
    import torch

    if len(jobs) == 1:
        return [run(jobs[0].inputs)]
    names = list(jobs[0].inputs)
    merged = {name: torch.cat([job.inputs[name] for job in jobs]) for name in names}
    outputs = run(merged)
    sizes = [job.rows for job in jobs]
    return _split(outputs, sizes)


def _split(outputs: Any, sizes: list[int]) -> list[Any]:
    import torch

    if isinstance(outputs, torch.Tensor):
        return list(outputs.split(sizes))
    if isinstance(outputs, dict):
        parts = {k: _split(v, sizes) for k, v in outputs.items()}
        return [{k: parts[k][i] for k in outputs} for i in range(len(sizes))]
    if isinstance(outputs, (tuple, list)):
        columns = [_split(v, sizes) for v in outputs]
        return [type(outputs)(c[i] for c in columns) for i in range(len(sizes))]
    raise TypeError(f"cannot split a batched output of type {type(outputs).__name__}")
