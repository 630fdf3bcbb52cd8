"""Request batching: concurrent requests for the same version, signature and input
layout are joined along the batch axis and run as one call, then split back.

A request that finds a model thread idle and nothing queued runs at once, so a lone
request never waits; while every model thread is busy, requests queue up, and a
batch runs as soon as a thread frees up, when it holds ``max_batch_size`` rows, or
when ``timeout_s`` has passed since its first request. When a joined batch is refused
(one request's pixels out of range fails the whole call), each request is run on
its own, so only the bad one gets the error. With batching off every request runs
alone on the model threads. All scheduling happens on the asyncio loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from serving.errors import ServingError

if TYPE_CHECKING:
    from serving.signatures import ServableModel, Signature

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class BatchingConfig:
    enabled: bool = True
    max_batch_size: int = 32
    timeout_s: float = 0.002

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.timeout_s < 0:
            raise ValueError(f"batch timeout must be >= 0, got {self.timeout_s}")


@dataclass
class _PendingBatch:
    servable: ServableModel
    signature: Signature
    requests: list[tuple[Arrays, int, asyncio.Future]] = field(default_factory=list)
    rows: int = 0
    timer: asyncio.TimerHandle | None = None


def _batch_rows(inputs: Arrays) -> int | None:
    """The common first dimension of the inputs, or None when they cannot be joined."""
    sizes = {array.shape[0] if array.ndim else None for array in inputs.values()}
    if len(sizes) != 1 or None in sizes:
        return None
    return sizes.pop()


def _run_one(servable: ServableModel, signature: Signature, inputs: Arrays) -> Arrays | Exception:
    try:
        return servable.run(signature, inputs)
    except ServingError as error:
        return error


def _run_joined(batch: _PendingBatch) -> list[Arrays | Exception]:
    """Run the joined batch on a model thread; one result (or error) per request."""
    keys = list(batch.requests[0][0])
    joined = {key: np.concatenate([inputs[key] for inputs, _, _ in batch.requests]) for key in keys}
    try:
        outputs = batch.servable.run(batch.signature, joined)
    except ServingError:
        outputs = None
    if outputs is not None and all(
        array.ndim and array.shape[0] == batch.rows for array in outputs.values()
    ):
        bounds = np.cumsum([rows for _, rows, _ in batch.requests])[:-1]
        pieces = {key: np.split(array, bounds) for key, array in outputs.items()}
        return [{key: pieces[key][i] for key in pieces} for i in range(len(batch.requests))]
    # A refused or unsplittable batch: answer each request on its own.
    return [_run_one(batch.servable, batch.signature, inputs) for inputs, _, _ in batch.requests]


class Batcher:
    """Runs signature calls on the model threads, joining concurrent ones when enabled."""

    def __init__(
        self,
        executor: Executor,
        threads: int,
        config: BatchingConfig,
        on_batch: Callable[[int], None] = lambda rows: None,
    ) -> None:
        self.executor = executor
        self.threads = threads
        self.config = config
        self._on_batch = on_batch
        # Insertion-ordered, so a freed thread takes the oldest batch.
        self._pending: dict[tuple, _PendingBatch] = {}
        self._in_flight = 0

    async def run(self, servable: ServableModel, signature: Signature, inputs: Arrays) -> Arrays:
        loop = asyncio.get_running_loop()
        rows = _batch_rows(inputs)
        if not self.config.enabled or rows is None or rows >= self.config.max_batch_size:
            self._on_batch(rows or 1)
            return await loop.run_in_executor(self.executor, servable.run, signature, inputs)
        key = (
            id(servable),
            signature.name,
            tuple((k, a.dtype.str, a.shape[1:]) for k, a in sorted(inputs.items())),
        )
        pending = self._pending.get(key)
        if pending is not None and pending.rows + rows > self.config.max_batch_size:
            self._flush(key)
            pending = None
        if pending is None:
            pending = _PendingBatch(servable, signature)
            self._pending[key] = pending
        future = loop.create_future()
        pending.requests.append((inputs, rows, future))
        pending.rows += rows
        if pending.rows >= self.config.max_batch_size or self._in_flight < self.threads:
            self._flush(key)
        elif pending.timer is None:
            pending.timer = loop.call_later(self.config.timeout_s, self._flush, key)
        result = await future
        if isinstance(result, Exception):
            raise result
        return result

    def _flush(self, key: tuple) -> None:
        batch = self._pending.pop(key, None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        self._on_batch(batch.rows)
        self._in_flight += 1
        loop = asyncio.get_running_loop()
        if len(batch.requests) == 1:
            inputs, _, _ = batch.requests[0]
            work = loop.run_in_executor(
                self.executor, _run_one, batch.servable, batch.signature, inputs
            )
        else:
            work = loop.run_in_executor(self.executor, _run_joined, batch)
        work.add_done_callback(lambda done: self._finished(batch, done))

    def _finished(self, batch: _PendingBatch, done: asyncio.Future) -> None:
        self._in_flight -= 1
        _deliver(batch, done)
        if self._pending:
            self._flush(next(iter(self._pending)))


def _deliver(batch: _PendingBatch, done: asyncio.Future) -> None:
    futures = [future for _, _, future in batch.requests]
    if done.exception() is not None:
        for future in futures:
            if not future.done():
                future.set_exception(done.exception())
        return
    results = done.result()
    if len(futures) == 1 and not isinstance(results, list):
        results = [results]
    for future, result in zip(futures, results, strict=True):
        if not future.done():
            future.set_result(result)
