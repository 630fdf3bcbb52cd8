"""Request batching: concurrent requests for the same version, signature and input
layout are joined along the batch axis and run as one call, then split back.

Scheduling follows TF Serving's batch scheduler. Requests join the open batch of
their kind; a batch is closed when it holds ``max_batch_size`` rows and then waits
in a queue for a model thread. Whenever a model thread is free, it takes the oldest
closed batch, else the oldest open batch once that batch has waited ``timeout_s``
since its first request (with the default 0, at once: a lone request never waits).
While every model thread is busy, open batches keep filling instead of being cut
by a timer, so the batch size adapts to the load. A request that would need a new
batch while ``max_enqueued_batches`` closed batches already wait is refused with
UNAVAILABLE (503), as TF Serving refuses it. When a joined batch is refused
(one request's pixels out of range fails the whole call), each request is run on
its own, so only the bad one gets the error. With batching off every request runs
alone on the model threads. All scheduling happens on the asyncio loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from serving.errors import ServingError, unavailable

if TYPE_CHECKING:
    from serving.signatures import ServableModel, Signature

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]

# The defaults; serving/deploy/batching_parameters.config gives real TF Serving the
# same values (tests/serving/test_deploy.py keeps them equal).
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_TIMEOUT_S = 0.0
DEFAULT_BATCH_THREADS = 1
DEFAULT_MAX_ENQUEUED_BATCHES = 100


@dataclass(frozen=True)
class BatchingConfig:
    enabled: bool = True
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    # How long an open batch may wait for more rows while a model thread is free.
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.timeout_s < 0:
            raise ValueError(f"batch timeout must be >= 0, got {self.timeout_s}")
        if self.max_enqueued_batches < 1:
            raise ValueError(f"max_enqueued_batches must be >= 1, got {self.max_enqueued_batches}")


@dataclass
class _PendingBatch:
    servable: ServableModel
    signature: Signature
    # Whether the batch may run before it is full: a free model thread takes it then.
    due: bool
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
    if len(batch.requests) == 1:
        inputs, _, _ = batch.requests[0]
        return [_run_one(batch.servable, batch.signature, inputs)]
    keys = list(batch.requests[0][0])
    joined = {key: np.concatenate([inputs[key] for inputs, _, _ in batch.requests]) for key in keys}
    try:
        outputs = batch.servable.run(batch.signature, joined)
    except ServingError:
        outputs = None
    if outputs is not None and all(
        array.ndim and array.shape[0] == batch.rows for array in outputs.values()
    ):
        results: list[Arrays | Exception] = []
        start = 0
        for _, rows, _ in batch.requests:
            results.append({key: array[start : start + rows] for key, array in outputs.items()})
            start += rows
        return results
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
        # Open batches by kind, insertion-ordered so the oldest is taken first.
        self._open: dict[tuple, _PendingBatch] = {}
        self._closed: deque[_PendingBatch] = deque()
        self._busy = 0

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
        batch = self._open.get(key)
        if batch is None or batch.rows + rows > self.config.max_batch_size:
            if len(self._closed) >= self.config.max_enqueued_batches:
                raise unavailable(
                    f"the batch queue is full: {len(self._closed)} batches of up to "
                    f"{self.config.max_batch_size} rows wait for a model thread "
                    "(max_enqueued_batches); retry later"
                )
            if batch is not None:
                self._close(key)
                batch = None
        if batch is None:
            batch = _PendingBatch(servable, signature, due=self.config.timeout_s == 0)
            self._open[key] = batch
            if not batch.due:
                batch.timer = loop.call_later(self.config.timeout_s, self._time_out, batch)
        future = loop.create_future()
        batch.requests.append((inputs, rows, future))
        batch.rows += rows
        if batch.rows >= self.config.max_batch_size:
            self._close(key)
        self._schedule()
        result = await future
        if isinstance(result, Exception):
            raise result
        return result

    def _close(self, key: tuple) -> None:
        batch = self._open.pop(key)
        if batch.timer is not None:
            batch.timer.cancel()
        self._closed.append(batch)

    def _time_out(self, batch: _PendingBatch) -> None:
        batch.timer = None
        batch.due = True
        self._schedule()

    def _next_batch(self) -> _PendingBatch | None:
        if self._closed:
            return self._closed.popleft()
        for key, batch in self._open.items():
            if batch.due:
                del self._open[key]
                if batch.timer is not None:
                    batch.timer.cancel()
                return batch
        return None

    def _schedule(self) -> None:
        """Give every free model thread a batch that is ready to run."""
        while self._busy < self.threads:
            batch = self._next_batch()
            if batch is None:
                return
            self._busy += 1
            self._on_batch(batch.rows)
            work = asyncio.get_running_loop().run_in_executor(self.executor, _run_joined, batch)
            work.add_done_callback(lambda done, batch=batch: self._finished(batch, done))

    def _finished(self, batch: _PendingBatch, done: asyncio.Future) -> None:
        self._busy -= 1
        _deliver(batch, done)
        self._schedule()


def _deliver(batch: _PendingBatch, done: asyncio.Future) -> None:
    futures = [future for _, _, future in batch.requests]
    error = done.exception()
    for index, future in enumerate(futures):
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(done.result()[index])
