"""The batcher: many episodes `await batcher.generate(request)`; it runs them as few batches.

Why: an orchestration rollout is hundreds of asyncio episodes, each alternating between
generating and waiting for tools. The released system waits turn by turn for the slowest
episode. Here there is no turn barrier: every episode submits its request the moment it is
ready; the batcher gathers whatever is pending and runs the sampler in one worker thread, so the
event loop keeps executing the tools of other episodes while the accelerator generates. Requests
that arrive during a generation form the next batch, which starts as soon as the device is free.

When to flush: the requests of episodes that finished their tools together arrive spread over
some milliseconds, and on a CPU a small batch costs nearly as much as a full one. So the batcher
keeps gathering while requests keep arriving: it flushes when `max_batch_size` wait, after
`max_wait_s` without a new arrival, or `max_gather_s` after the oldest request, whichever comes
first. (A fixed 5 ms window split the turns of 64 episodes into a small and a large batch and
missed the overlap target; see benchmarks/rollout_overlap.py.)

A request that cannot be served (a prompt longer than the model's context) fails alone, with a
clear error, before it is batched; a failure of a whole batch reaches every request in it and
the batcher keeps serving.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import time
from typing import Any

from orchestra_jax.rollout.requests import GenerationRequest, GenerationResult
from orchestra_jax.rollout.sampler import Sampler


@dataclasses.dataclass
class _Pending:
    request: GenerationRequest
    future: asyncio.Future
    arrived: float


class Batcher:
    """Gathers concurrent generation requests into sampler batches; see the module docstring."""

    def __init__(
        self,
        sampler: Sampler,
        *,
        max_batch_size: int = 32,
        max_wait_s: float = 0.005,
        max_gather_s: float = 0.05,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if not 0 <= max_wait_s <= max_gather_s:
            raise ValueError(
                f"need 0 <= max_wait_s ({max_wait_s}) <= max_gather_s ({max_gather_s})"
            )
        self.sampler = sampler
        self.max_batch_size = int(max_batch_size)
        self.max_wait_s = float(max_wait_s)
        self.max_gather_s = float(max_gather_s)
        self._pending: list[_Pending] = []
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sampler")
        self._closed = False
        self._stats = {"requests": 0, "flushes": 0, "rows": 0, "failed_batches": 0,
                       "busy_s": 0.0, "queue_wait_s": 0.0, "max_rows": 0}

    @property
    def params_version(self) -> int:
        return self.sampler.params_version

    def update_params(self, state: Any, version: int) -> None:
        """New policy parameters for every batch that starts after this call."""
        self.sampler.update_params(state, version)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Continue one prompt; returns when its batch is done."""
        if self._closed:
            raise RuntimeError("this Batcher is closed")
        self._check(request)
        self._bind_loop()
        future = self._loop.create_future()
        self._pending.append(_Pending(request, future, time.perf_counter()))
        self._stats["requests"] += 1
        self._wake.set()
        return await future

    def _check(self, request: GenerationRequest) -> None:
        limit = self.sampler.config.max_position_embeddings
        total = len(request.prompt_ids) + request.params.max_new_tokens
        if total > limit:
            raise ValueError(
                f"prompt of {len(request.prompt_ids)} tokens + max_new_tokens "
                f"{request.params.max_new_tokens} exceeds the model's context of {limit} tokens"
            )

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._worker is None or self._worker.done():
            if self._loop is not loop:
                # A new event loop (a fresh asyncio.run): futures of the old one are unusable.
                self._pending = [p for p in self._pending if p.future.get_loop() is loop]
            self._loop = loop
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._serve(), name="batcher")

    async def _serve(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            batch = await self._gather()
            if self._pending:
                self._wake.set()  # more are waiting: go round again at once
            if batch:
                await self._run(batch)

    async def _gather(self) -> list[_Pending]:
        """Wait for more requests while they keep coming, then take up to one batch.

        Flushes when `max_batch_size` wait, after `max_wait_s` without a new arrival, or
        `max_gather_s` after the oldest request, whichever comes first.
        """
        self._pending = [p for p in self._pending if not p.future.done()]
        if not self._pending:
            return []
        deadline = self._pending[0].arrived + self.max_gather_s
        while self._pending and not self._closed and len(self._pending) < self.max_batch_size:
            quiet_until = self._pending[-1].arrived + self.max_wait_s
            remaining = min(deadline, quiet_until) - time.perf_counter()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                break
            self._wake.clear()
        batch = self._pending[: self.max_batch_size]
        self._pending = self._pending[self.max_batch_size:]
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        batch = [p for p in batch if not p.future.done()]  # drop requests whose caller left
        if not batch:
            return
        start = time.perf_counter()
        self._stats["queue_wait_s"] += sum(start - p.arrived for p in batch)
        prompts = [list(p.request.prompt_ids) for p in batch]
        params = [p.request.params for p in batch]
        try:
            results = await self._loop.run_in_executor(
                self._thread, self.sampler.sample, prompts, params
            )
        except Exception as error:  # the batch fails; the batcher keeps serving
            self._stats["failed_batches"] += 1
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(error)
            return
        finally:
            self._stats["busy_s"] += time.perf_counter() - start
        self._stats["flushes"] += 1
        self._stats["rows"] += len(batch)
        self._stats["max_rows"] = max(self._stats["max_rows"], len(batch))
        for p, result in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(result)

    def stats(self) -> dict[str, Any]:
        """Counters: requests, flushes, rows (mean and max per flush), busy and queueing time."""
        out = dict(self._stats)
        out["mean_rows"] = out["rows"] / out["flushes"] if out["flushes"] else 0.0
        out["pending"] = len(self._pending)
        out["compiled_programs"] = self.sampler.compile_count()
        return out

    async def aclose(self) -> None:
        """Stop serving; requests still waiting fail with a clear error."""
        self._closed = True
        for p in self._pending:
            if not p.future.done():
                p.future.set_exception(RuntimeError("the Batcher was closed"))
        self._pending = []
        if self._worker is not None and not self._worker.done():
            self._wake.set()
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._thread.shutdown(wait=False)
