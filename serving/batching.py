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
UNAVAILABLE (503), as TF Serving refuses it. A request too large to join others
(``max_batch_size`` rows or more) is a closed batch of its own. When a joined batch
is refused (one request's pixels out of range fails the whole call), each request
is run on its own, so only the bad one gets the error. With batching off every
request runs alone on the executor's model threads.

As in TF Serving, the model threads take the batches themselves: a thread that
finishes a batch hands the results to the asyncio loop and starts on the next batch
at once, without waiting for the loop to schedule it. Under load the loop is busy
answering and reading requests, and a thread waiting for it to hand over the next
batch would sit idle for up to Python's switch interval (5 ms) at every batch.
Requests join batches on the loop; the queue is shared under one lock.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
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
    # The loop the requests wait on: results are handed back to it.
    loop: asyncio.AbstractEventLoop
    # When a free model thread may take the batch before it is full (time.monotonic()).
    due_at: float
    requests: list[tuple[Arrays, int, asyncio.Future]] = field(default_factory=list)
    rows: int = 0


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
    """Runs signature calls on the model threads, joining concurrent ones when enabled.
    ``executor`` runs the calls when batching is off; with batching on, ``threads``
    model threads of the batcher's own take the batches (``close`` stops them)."""

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
        # Guards everything below; model threads wait on it for work.
        self._work = threading.Condition(threading.Lock())
        # Open batches by kind, insertion-ordered so the oldest is taken first.
        self._open: dict[tuple, _PendingBatch] = {}
        self._closed: deque[_PendingBatch] = deque()
        self._workers: list[threading.Thread] = []
        self._closing = False

    async def run(self, servable: ServableModel, signature: Signature, inputs: Arrays) -> Arrays:
        loop = asyncio.get_running_loop()
        rows = _batch_rows(inputs)
        if not self.config.enabled:
            self._on_batch(rows or 1)
            return await loop.run_in_executor(self.executor, servable.run, signature, inputs)
        future = loop.create_future()
        with self._work:
            if self._closing:
                raise unavailable("the server is shutting down; retry on another replica")
            if not self._workers:
                self._start_workers()
            self._enqueue(servable, signature, inputs, rows, future, loop)
            self._work.notify()
        result = await future
        if isinstance(result, Exception):
            raise result
        return result

    def _enqueue(
        self,
        servable: ServableModel,
        signature: Signature,
        inputs: Arrays,
        rows: int | None,
        future: asyncio.Future,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """Add the request to its batch (the lock held)."""
        maximum = self.config.max_batch_size
        if rows is None or rows >= maximum:
            self._check_queue()
            batch = _PendingBatch(servable, signature, loop, due_at=0.0)
            batch.requests.append((inputs, rows or 1, future))
            batch.rows = rows or 1
            self._closed.append(batch)
            return
        key = (
            id(servable),
            signature.name,
            tuple((k, a.dtype.str, a.shape[1:]) for k, a in sorted(inputs.items())),
        )
        batch = self._open.get(key)
        if batch is None or batch.rows + rows > maximum:
            self._check_queue()
            if batch is not None:
                self._closed.append(self._open.pop(key))
            batch = _PendingBatch(
                servable, signature, loop, due_at=time.monotonic() + self.config.timeout_s
            )
            self._open[key] = batch
        batch.requests.append((inputs, rows, future))
        batch.rows += rows
        if batch.rows >= maximum:
            self._closed.append(self._open.pop(key))

    def _check_queue(self) -> None:
        if len(self._closed) >= self.config.max_enqueued_batches:
            raise unavailable(
                f"the batch queue is full: {len(self._closed)} batches of up to "
                f"{self.config.max_batch_size} rows wait for a model thread "
                "(max_enqueued_batches); retry later"
            )

    def _start_workers(self) -> None:
        for index in range(self.threads):
            worker = threading.Thread(
                target=self._serve_batches, name=f"model-batch-{index}", daemon=True
            )
            worker.start()
            self._workers.append(worker)

    def _next_batch(self) -> tuple[_PendingBatch | None, float | None]:
        """The batch a free thread takes now, else how long until an open batch is due
        (None: nothing waits). The lock held."""
        if self._closed:
            return self._closed.popleft(), None
        now = time.monotonic()
        wait = None
        for key, batch in self._open.items():
            if batch.due_at <= now:
                del self._open[key]
                return batch, None
            wait = batch.due_at - now if wait is None else min(wait, batch.due_at - now)
        return None, wait

    def _serve_batches(self) -> None:
        """A model thread: take a batch, run it, hand the results to the loop, repeat."""
        while True:
            with self._work:
                batch, wait = self._next_batch()
                while batch is None:
                    if self._closing:
                        return
                    self._work.wait(wait)
                    batch, wait = self._next_batch()
            self._on_batch(batch.rows)
            try:
                results: list[Arrays | Exception] | BaseException = _run_joined(batch)
            except Exception as error:  # noqa: BLE001 - every waiting request gets it
                results = error
            try:
                batch.loop.call_soon_threadsafe(_deliver, batch, results)
            except RuntimeError:  # the loop has closed: nobody waits for the answers
                logger.debug("dropped the results of a batch: the event loop is closed")

    def close(self) -> None:
        """Stop the model threads once the batches already queued have run."""
        with self._work:
            self._closing = True
            self._work.notify_all()
        for worker in self._workers:
            worker.join(timeout=30)


def _deliver(batch: _PendingBatch, results: list[Arrays | Exception] | BaseException) -> None:
    """On the loop: each request's rows, or the error that stopped the whole call."""
    for index, (_, _, future) in enumerate(batch.requests):
        if future.done():  # the client went away
            continue
        if isinstance(results, BaseException):
            future.set_exception(results)
        else:
            future.set_result(results[index])
