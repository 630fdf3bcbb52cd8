"""The batch scheduler on its own (``serving/batching.py``), with a stand-in model whose
calls block until the test lets them finish: when batches run, how big they get, the
timeout, the queue limit and the per-request fallback. No TensorFlow, no server.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest

from serving.batching import Batcher, BatchingConfig
from serving.errors import ServingError, invalid_argument


@dataclass(frozen=True)
class FakeSignature:
    name: str = "predict_images_uint8"


class GatedModel:
    """Doubles its input; each call waits for ``release`` and records its row count.
    A row of 255s stands for a bad image: a call holding one is refused."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.started = threading.Semaphore(0)
        self.release = threading.Event()

    def run(self, signature: FakeSignature, inputs: dict[str, np.ndarray]) -> dict:
        images = inputs["images"]
        self.calls.append(len(images))
        self.started.release()
        self.release.wait(10)
        if (images == 255).all(axis=1).any():
            raise invalid_argument("pixel out of range")
        return {"doubled": images.astype(np.int64) * 2}


def image(value: int) -> dict[str, np.ndarray]:
    return {"images": np.full((1, 4), value, np.uint8)}


async def started(model: GatedModel) -> None:
    assert await asyncio.to_thread(model.started.acquire, True, 10), "no model call started"


def run_with(config: BatchingConfig, scenario, threads: int = 1):
    model = GatedModel()
    with ThreadPoolExecutor(threads) as executor:
        sizes: list[int] = []
        batcher = Batcher(executor, threads, config, on_batch=sizes.append)
        try:
            result = asyncio.run(scenario(batcher, model))
        finally:
            model.release.set()
            batcher.close()
    return model, sizes, result


def test_lone_request_runs_at_once_and_busy_thread_lets_the_next_batch_fill():
    """The first request runs alone at once; the 10 that come while the thread is busy
    wait (no timer cuts them) and then run as one batch of 10, each getting its own rows."""

    async def scenario(batcher: Batcher, model: GatedModel):
        signature = FakeSignature()
        first = asyncio.ensure_future(batcher.run(model, signature, image(1)))
        await started(model)
        rest = [
            asyncio.ensure_future(batcher.run(model, signature, image(v))) for v in range(2, 12)
        ]
        await asyncio.sleep(0.05)
        assert model.calls == [1]
        model.release.set()
        return await asyncio.gather(first, *rest)

    model, sizes, results = run_with(BatchingConfig(max_batch_size=32), scenario)
    assert model.calls == sizes == [1, 10]
    assert [int(r["doubled"][0, 0]) for r in results] == [2 * v for v in range(1, 12)]
    assert all(r["doubled"].shape == (1, 4) for r in results)


def test_full_batches_close_at_max_batch_size():
    async def scenario(batcher: Batcher, model: GatedModel):
        signature = FakeSignature()
        first = asyncio.ensure_future(batcher.run(model, signature, image(0)))
        await started(model)
        rest = [asyncio.ensure_future(batcher.run(model, signature, image(v))) for v in range(10)]
        await asyncio.sleep(0.01)
        model.release.set()
        return await asyncio.gather(first, *rest)

    model, _, _ = run_with(BatchingConfig(max_batch_size=4), scenario)
    assert model.calls == [1, 4, 4, 2]


def test_timeout_holds_a_batch_while_the_thread_is_free():
    """With a timeout, a batch waits that long for company even though a thread is free."""

    async def scenario(batcher: Batcher, model: GatedModel):
        model.release.set()
        signature = FakeSignature()
        loop = asyncio.get_running_loop()
        began = loop.time()
        first = asyncio.ensure_future(batcher.run(model, signature, image(1)))
        await asyncio.sleep(0.02)
        second = asyncio.ensure_future(batcher.run(model, signature, image(2)))
        await asyncio.gather(first, second)
        return loop.time() - began

    model, _, waited = run_with(BatchingConfig(timeout_s=0.1), scenario)
    assert model.calls == [2]
    assert waited >= 0.09


def test_a_full_queue_refuses_with_unavailable():
    async def scenario(batcher: Batcher, model: GatedModel):
        signature = FakeSignature()
        first = asyncio.ensure_future(batcher.run(model, signature, image(0)))
        await started(model)
        # Thread busy: two full batches of 2 queue (the limit), the next request is refused.
        queued = [asyncio.ensure_future(batcher.run(model, signature, image(v))) for v in range(4)]
        await asyncio.sleep(0)
        with pytest.raises(ServingError) as refused:
            await batcher.run(model, signature, image(9))
        model.release.set()
        await asyncio.gather(first, *queued)
        return refused.value

    model, _, error = run_with(BatchingConfig(max_batch_size=2, max_enqueued_batches=2), scenario)
    assert error.http_status == 503
    assert "max_enqueued_batches" in error.message
    assert model.calls == [1, 2, 2]


def test_a_refused_batch_is_answered_request_by_request():
    """One bad image in a joined batch: only its request gets the error."""

    async def scenario(batcher: Batcher, model: GatedModel):
        signature = FakeSignature()
        first = asyncio.ensure_future(batcher.run(model, signature, image(1)))
        await started(model)
        joined = [
            asyncio.ensure_future(batcher.run(model, signature, image(v))) for v in (2, 255, 3)
        ]
        await asyncio.sleep(0.01)
        model.release.set()
        return await asyncio.gather(first, *joined, return_exceptions=True)

    model, _, results = run_with(BatchingConfig(), scenario)
    assert model.calls == [1, 3, 1, 1, 1]
    assert [int(r["doubled"][0, 0]) for r in (results[0], results[1], results[3])] == [2, 4, 6]
    assert isinstance(results[2], ServingError) and "out of range" in results[2].message


def test_a_free_model_thread_takes_the_next_batch_while_the_loop_is_busy():
    """The model thread that finishes a batch starts the waiting one itself: with the
    asyncio loop blocked (as under load, answering other requests), the second batch
    still runs. Its results reach the requests once the loop runs again."""

    async def scenario(batcher: Batcher, model: GatedModel):
        signature = FakeSignature()
        first = asyncio.ensure_future(batcher.run(model, signature, image(1)))
        await started(model)
        waiting = [asyncio.ensure_future(batcher.run(model, signature, image(v))) for v in (2, 3)]
        await asyncio.sleep(0.01)  # both join the open batch
        model.release.set()
        time.sleep(0.3)  # the loop is blocked: only the model thread can move
        calls_while_blocked = list(model.calls)
        results = await asyncio.gather(first, *waiting)
        return calls_while_blocked, results

    model, sizes, (calls_while_blocked, results) = run_with(BatchingConfig(), scenario)
    assert calls_while_blocked == model.calls == sizes == [1, 2]
    assert [int(r["doubled"][0, 0]) for r in results] == [2, 4, 6]


def test_a_request_too_large_to_join_is_a_batch_of_its_own():
    """A request of max_batch_size rows or more runs alone, in queue order, on the same
    model thread as the batches."""

    async def scenario(batcher: Batcher, model: GatedModel):
        signature = FakeSignature()
        first = asyncio.ensure_future(batcher.run(model, signature, image(1)))
        await started(model)
        large = {"images": np.full((5, 4), 7, np.uint8)}
        big = asyncio.ensure_future(batcher.run(model, signature, large))
        small = [asyncio.ensure_future(batcher.run(model, signature, image(v))) for v in (2, 3)]
        await asyncio.sleep(0.01)
        model.release.set()
        return await asyncio.gather(first, big, *small)

    model, _, results = run_with(BatchingConfig(max_batch_size=4), scenario)
    assert model.calls == [1, 5, 2]
    assert results[1]["doubled"].shape == (5, 4) and int(results[1]["doubled"][4, 3]) == 14


def test_a_closed_batcher_refuses_new_requests_and_its_threads_end():
    async def scenario(batcher: Batcher, model: GatedModel):
        model.release.set()
        signature = FakeSignature()
        answered = await batcher.run(model, signature, image(4))
        workers = list(batcher._workers)
        batcher.close()
        with pytest.raises(ServingError) as refused:
            await batcher.run(model, signature, image(5))
        return answered, workers, refused.value

    model, _, (answered, workers, error) = run_with(BatchingConfig(), scenario)
    assert int(answered["doubled"][0, 0]) == 8 and model.calls == [1]
    assert len(workers) == 1 and not any(worker.is_alive() for worker in workers)
    assert error.http_status == 503 and "shutting down" in error.message


def test_batching_off_runs_every_request_alone():
    async def scenario(batcher: Batcher, model: GatedModel):
        model.release.set()
        signature = FakeSignature()
        return await asyncio.gather(*(batcher.run(model, signature, image(v)) for v in range(5)))

    model, sizes, _ = run_with(BatchingConfig(enabled=False), scenario, threads=2)
    assert model.calls == [1] * 5 and sizes == [1] * 5


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be >= 1, got 0"),
        ({"timeout_s": -1}, "batch timeout must be >= 0, got -1"),
        ({"max_enqueued_batches": 0}, "max_enqueued_batches must be >= 1, got 0"),
    ],
)
def test_config_names_the_bad_setting(kwargs, complaint):
    with pytest.raises(ValueError, match=complaint):
        BatchingConfig(**kwargs)
