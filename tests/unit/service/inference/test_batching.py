"""DynamicBatcher with a real numpy run_batch (y = 2x) and `threading.Event`s that hold a batch in
flight, so every scenario is deterministic: no timed assertions, no sleeps standing in for events.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pytest

from service.inference.batching import DynamicBatcher, Priority
from service.inference.errors import (
    BatcherClosed,
    DeadlineExceeded,
    MalformedInputs,
    QueueFull,
    RequestTooLarge,
)
from service.metrics import ServiceMetrics


class Doubler:
    """run_batch: {"x": [B, W]} -> {"y": 2x}; records each batch; raises on negative inputs.

    Close `gate` to hold the next batch in flight; `started` is set once a batch is running.
    """

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []  # the x of every call, in call order
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        self.batches.append(x.copy())
        self.started.set()
        assert self.gate.wait(30), "test never released the batch"
        if (x < 0).any():
            raise ValueError(f"negative input in a batch of {x.shape[0]}")
        return {"y": x * 2, "sum": x.sum(axis=1)}

    def seen(self) -> set[float]:
        """Every value of column 0 that reached run_batch."""
        return {float(v) for b in self.batches for v in b[:, 0]}

    def hold_next(self) -> None:
        """Close the gate; after this the next batch blocks in run_batch until release()."""
        self.gate.clear()
        self.started.clear()

    async def wait_running(self) -> None:
        assert await asyncio.to_thread(self.started.wait, 30)

    def release(self) -> None:
        self.gate.set()


def rows(values: list[float], width: int = 3, dtype: Any = np.float32) -> dict[str, np.ndarray]:
    x = np.repeat(np.asarray(values, dtype=dtype)[:, None], width, axis=1)  # [len(values), width]
    return {"x": x}


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


async def until(predicate: Callable[[], bool]) -> None:
    """Yield to the event loop until `predicate` holds (bounded in yields, not in time)."""
    for _ in range(10_000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


async def started_batcher(fn: Doubler, **limits: Any) -> DynamicBatcher:
    limits = {"max_batch_size": 4, "max_queue_delay_ms": 60_000.0, "max_queue_rows": 64} | limits
    b = DynamicBatcher("doubler", fn, **limits)
    await b.start()
    return b


async def occupy(b: DynamicBatcher, fn: Doubler, value: float = 1000.0) -> asyncio.Task[dict[str, np.ndarray]]:
    """Put a full batch in flight (so it goes at once) and keep it there until fn.release()."""
    fn.hold_next()
    task = asyncio.create_task(b.submit(rows([value] * b.max_batch_size), priority=Priority.PLAN))
    await fn.wait_running()
    return task


def expect_doubled(out: dict[str, np.ndarray], values: list[float], width: int = 3) -> None:
    np.testing.assert_array_equal(out["y"], rows(values, width)["x"] * 2)
    np.testing.assert_allclose(out["sum"], np.asarray(values) * width)


# ----------------------------------------------------------------------------- results and batch limits
@pytest.mark.parametrize("delay_ms", [0.0, 2.0])
@pytest.mark.parametrize("max_batch", [1, 2, 4, 8])
def test_each_request_gets_its_own_rows_back_in_order(max_batch: int, delay_ms: float) -> None:
    async def scenario() -> None:
        fn = Doubler()
        b = await started_batcher(fn, max_batch_size=max_batch, max_queue_delay_ms=delay_ms)
        rng = np.random.default_rng(max_batch)
        requests = [list(rng.integers(1, 1000, size=int(rng.integers(1, 4))).astype(float)) for _ in range(20)]
        outs = await asyncio.gather(*(b.submit(rows(r)) for r in requests))
        for r, out in zip(requests, outs, strict=True):
            expect_doubled(out, r)
        assert all(1 <= batch.shape[0] <= max_batch for batch in fn.batches)
        assert sum(batch.shape[0] for batch in fn.batches) == sum(map(len, requests))  # each row ran once
        assert b.queue_rows == 0
        await b.drain(5)

    run(scenario)


@pytest.mark.parametrize("max_batch", [2, 4, 8])
def test_full_batch_goes_at_once_without_waiting_for_the_delay(max_batch: int) -> None:
    async def scenario() -> None:
        fn = Doubler()
        b = await started_batcher(fn, max_batch_size=max_batch, max_queue_delay_ms=3_600_000.0)  # an hour
        values = [float(v) for v in range(max_batch)]
        outs = await asyncio.gather(*(b.submit(rows([v])) for v in values))  # would hang for an hour if not full
        assert [o["y"][0, 0] for o in outs] == [2 * v for v in values]
        assert [batch.shape[0] for batch in fn.batches] == [max_batch]
        await b.drain(5)

    run(scenario)


def test_batches_form_while_one_is_in_flight() -> None:
    async def scenario() -> None:
        fn = Doubler()
        b = await started_batcher(fn, max_batch_size=4, max_queue_delay_ms=3_600_000.0)
        first = await occupy(b, fn)
        tasks = [asyncio.create_task(b.submit(rows([v]))) for v in (1.0, 2.0, 3.0)]
        await until(lambda: b.queue_rows == 3)
        fn.release()
        await first
        drain = asyncio.create_task(b.drain(10))  # flushes the 3 queued rows instead of waiting an hour
        outs = await asyncio.gather(*tasks)
        await drain
        assert [o["y"][0, 0] for o in outs] == [2.0, 4.0, 6.0]
        assert [batch.shape[0] for batch in fn.batches] == [4, 3]

    run(scenario)


# ----------------------------------------------------------------------------- grouping and splitting
def test_only_matching_keys_dtypes_and_shapes_share_a_batch() -> None:
    async def scenario() -> None:
        fn = Doubler()
        b = await started_batcher(fn, max_batch_size=8, max_queue_delay_ms=0.0)
        first = await occupy(b, fn)
        kinds = [(1.0, 3, np.float32), (2.0, 5, np.float32), (3.0, 3, np.float64), (4.0, 3, np.float32),
                 (5.0, 5, np.float32)]
        tasks = [asyncio.create_task(b.submit(rows([v], w, dt))) for v, w, dt in kinds]
        await until(lambda: b.queue_rows == len(kinds))
        fn.release()
        await first
        outs = await asyncio.gather(*tasks)
        for (v, w, dt), out in zip(kinds, outs, strict=True):
            assert out["y"].dtype == dt and out["y"].shape == (1, w) and out["y"][0, 0] == 2 * v
        later = [sorted(batch[:, 0].tolist()) + [batch.shape[1], batch.dtype] for batch in fn.batches[1:]]
        assert later == [[1.0, 4.0, 3, np.float32], [2.0, 5.0, 5, np.float32], [3.0, 3, np.float64]]
        await b.drain(5)

    run(scenario)


@pytest.mark.parametrize(("max_batch", "n"), [(4, 10), (4, 8), (3, 7), (1, 5), (8, 9)])
def test_oversized_request_is_split_across_batches_and_reassembled(max_batch: int, n: int) -> None:
    async def scenario() -> None:
        fn = Doubler()
        b = await started_batcher(fn, max_batch_size=max_batch, max_queue_delay_ms=3_600_000.0)
        values = [float(v) for v in range(100, 100 + n)]
        out = await b.submit(rows(values))
        expect_doubled(out, values)
        assert [batch.shape[0] for batch in fn.batches] == [min(max_batch, n - i) for i in range(0, n, max_batch)]
        await b.drain(5)

    run(scenario)


# ----------------------------------------------------------------------------- bounded queue
@pytest.mark.parametrize(("max_batch", "max_queue"), [(1, 1), (2, 4), (4, 4), (4, 16)])
def test_full_queue_rejects_at_once_with_retry_after(max_batch: int, max_queue: int) -> None:
    async def scenario() -> None:
        fn = Doubler()
        metrics = ServiceMetrics()
        b = DynamicBatcher("doubler", fn, max_batch_size=max_batch, max_queue_delay_ms=3_600_000.0,
                           max_queue_rows=max_queue, metrics=metrics.batcher("doubler"))
        await b.start()
        await b.submit(rows([1.0] * max_batch))  # one measured batch, so Retry-After comes from compute time
        first = await occupy(b, fn)
        tasks = [asyncio.create_task(b.submit(rows([float(v)]))) for v in range(max_queue)]
        await until(lambda: b.queue_rows == max_queue)
        with pytest.raises(QueueFull, match="queue is full") as info:
            await b.submit(rows([-1.0]))  # raises before any await: the queue never holds it
        assert info.value.reason == "queue_full"
        assert 0 < info.value.retry_after_s < 60
        assert b.queue_rows == max_queue
        rejected = metrics.registry.get_sample_value(
            "lawm_rejections_total", {"component": "doubler", "reason": "queue_full"})
        assert rejected == 1.0
        fn.release()
        await first
        await asyncio.create_task(b.drain(10))
        assert len(await asyncio.gather(*tasks)) == max_queue
        assert -1.0 not in fn.seen()

    run(scenario)


def test_backlog_longer_than_the_wait_budget_is_shed_by_priority() -> None:
    """Admission by estimated wait: the rows in flight and queued at the request's level and above,
    at the measured time per row, against max_queue_wait_s (no clock involved: the per-row time is
    set, as if measured)."""
    async def scenario() -> None:
        fn = Doubler()
        metrics = ServiceMetrics()
        b = await started_batcher(fn, max_batch_size=2, max_queue_rows=64, max_queue_wait_s=3.5,
                                  metrics=metrics.batcher("doubler"))
        assert b.estimated_wait(Priority.INTERACTIVE) is None  # nothing measured: nothing shed
        await b.submit(rows([1.0, 2.0]))
        b._seconds_per_row = 1.0
        first = await occupy(b, fn)  # 2 rows in flight
        renders = asyncio.create_task(b.submit(rows([5.0, 6.0]), priority=Priority.RENDER))
        await until(lambda: b.queue_rows == 2)
        assert b.estimated_wait(Priority.INTERACTIVE) == 2.0  # renders run after interactive calls
        assert b.estimated_wait(Priority.RENDER) == 4.0
        b.check_wait(Priority.INTERACTIVE)  # 2 s within the 3.5 s budget ...
        with pytest.raises(QueueFull, match="1.75 s budget"):  # ... but over the door's half of it
            b.check_wait(Priority.INTERACTIVE, 0.5)
        with pytest.raises(QueueFull, match="budget") as info:
            await b.submit(rows([7.0]), priority=Priority.RENDER)
        assert info.value.reason == "queue_wait" and info.value.retry_after_s == pytest.approx(0.5)
        interactive = asyncio.create_task(b.submit(rows([8.0]), priority=Priority.INTERACTIVE))  # 2 s: admitted
        await until(lambda: b.queue_rows == 3)
        assert metrics.registry.get_sample_value(
            "lawm_rejections_total", {"component": "doubler", "reason": "queue_wait"}) == 2.0
        fn.release()
        await asyncio.gather(first, renders, interactive)
        assert 7.0 not in fn.seen()
        await b.drain(5)

    run(scenario)


def test_request_larger_than_the_whole_queue_is_refused_as_too_large() -> None:
    async def scenario() -> None:
        b = await started_batcher(Doubler(), max_batch_size=2, max_queue_rows=4)
        with pytest.raises(RequestTooLarge, match="raise max_queue_rows") as info:
            await b.submit(rows([1.0] * 5))
        assert info.value.reason == "too_large"
        await b.drain(5)

    run(scenario)


# ----------------------------------------------------------------------------- deadlines
def test_deadline_passing_in_the_queue_drops_the_request_uncomputed() -> None:
    async def scenario() -> None:
        fn = Doubler()
        b = await started_batcher(fn, max_batch_size=4, max_queue_delay_ms=3_600_000.0)
        first = await occupy(b, fn)
        deadline = time.monotonic() + 0.05
        late = asyncio.create_task(b.submit(rows([7.0]), deadline=deadline))
        keep = asyncio.create_task(b.submit(rows([8.0])))
        with pytest.raises(DeadlineExceeded, match="while queued") as info:
            await late  # the batcher wakes at the deadline by itself; the batch in flight still holds
        assert info.value.reason == "deadline" and time.monotonic() >= deadline
        assert b.queue_rows == 1
        fn.release()
        await first
        await b.drain(10)
        assert (await keep)["y"][0, 0] == 16.0
        assert 7.0 not in fn.seen()

    run(scenario)


def test_deadline_passing_during_compute_fails_only_that_request() -> None:
    async def scenario() -> None:
        fn = Doubler()
        b = await started_batcher(fn, max_batch_size=3, max_queue_delay_ms=3_600_000.0)
        fn.hold_next()
        deadline = time.monotonic() + 0.05
        tasks = [asyncio.create_task(b.submit(rows([1.0]))),
                 asyncio.create_task(b.submit(rows([2.0]), deadline=deadline)),
                 asyncio.create_task(b.submit(rows([3.0])))]
        await fn.wait_running()  # the full batch of 3 is computing
        while time.monotonic() <= deadline:  # let the deadline pass while it computes
            await asyncio.sleep(deadline - time.monotonic() + 0.001)
        fn.release()
        a, late, c = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(late, DeadlineExceeded) and "while 'doubler' computed it" in late.message
        assert a["y"][0, 0] == 2.0 and c["y"][0, 0] == 6.0
        assert [batch.shape[0] for batch in fn.batches] == [3]
        await b.drain(5)

    run(scenario)


def test_deadline_already_past_is_refused_at_submit() -> None:
    async def scenario() -> None:
        fn = Doubler()
        b = await started_batcher(fn)
        with pytest.raises(DeadlineExceeded):
            await b.submit(rows([1.0]), deadline=time.monotonic() - 1)
        assert fn.batches == []
        await b.drain(5)

    run(scenario)


# ----------------------------------------------------------------------------- priorities
@pytest.mark.parametrize("max_batch", [1, 2, 6])
def test_session_before_plan_before_interactive_before_render_fifo_within_a_level(max_batch: int) -> None:
    async def scenario() -> None:
        fn = Doubler()
        b = await started_batcher(fn, max_batch_size=max_batch, max_queue_delay_ms=0.0)
        first = await occupy(b, fn)
        order = [(10.0, Priority.RENDER), (20.0, Priority.INTERACTIVE), (30.0, Priority.PLAN), (40.0, Priority.SESSION),
                 (11.0, Priority.RENDER), (21.0, Priority.INTERACTIVE), (31.0, Priority.PLAN), (41.0, Priority.SESSION)]
        tasks = [asyncio.create_task(b.submit(rows([v]), priority=p)) for v, p in order]
        await until(lambda: b.queue_rows == len(order))
        fn.release()
        await first
        await asyncio.gather(*tasks)
        ran = [float(v) for batch in fn.batches[1:] for v in batch[:, 0]]
        assert ran == [40.0, 41.0, 30.0, 31.0, 20.0, 21.0, 10.0, 11.0]
        assert all(batch.shape[0] <= max_batch for batch in fn.batches)
        await b.drain(5)

    run(scenario)


# ----------------------------------------------------------------------------- cancellation
@pytest.mark.parametrize("n_rows", [1, 3, 9])
def test_cancelled_request_leaves_the_queue_and_never_runs(n_rows: int) -> None:
    async def scenario() -> None:
        fn = Doubler()
        metrics = ServiceMetrics()
        b = DynamicBatcher("doubler", fn, max_batch_size=4, max_queue_delay_ms=0.0, max_queue_rows=32,
                           metrics=metrics.batcher("doubler"))
        await b.start()
        first = await occupy(b, fn)
        gone_values = [500.0 + i for i in range(n_rows)]
        gone = asyncio.create_task(b.submit(rows(gone_values)))
        stay = asyncio.create_task(b.submit(rows([5.0])))
        await until(lambda: b.queue_rows == n_rows + 1)
        gone.cancel()  # the client disconnected
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert b.queue_rows == 1
        assert metrics.registry.get_sample_value("lawm_queue_depth", {"component": "doubler"}) == 1.0
        fn.release()
        await first
        assert (await stay)["y"][0, 0] == 10.0
        assert not set(gone_values) & fn.seen()
        assert metrics.registry.get_sample_value(
            "lawm_rejections_total", {"component": "doubler", "reason": "cancelled"}) == 1.0
        await b.drain(5)

    run(scenario)


# ----------------------------------------------------------------------------- isolation
@pytest.mark.parametrize("bad_at", [0, 1, 3])
@pytest.mark.parametrize("max_batch", [4, 8])
def test_a_failing_request_never_fails_its_batch_mates(max_batch: int, bad_at: int) -> None:
    async def scenario() -> None:
        fn = Doubler()
        b = await started_batcher(fn, max_batch_size=max_batch, max_queue_delay_ms=0.0)
        first = await occupy(b, fn)
        values = [[1.0], [2.0, 3.0], [4.0], [5.0]]
        values[bad_at] = [-1.0] * len(values[bad_at])
        tasks = [asyncio.create_task(b.submit(rows(v))) for v in values]
        await until(lambda: b.queue_rows == 5)
        fn.release()
        await first
        outs = await asyncio.gather(*tasks, return_exceptions=True)
        for i, (v, out) in enumerate(zip(values, outs, strict=True)):
            if i == bad_at:
                assert isinstance(out, ValueError) and f"batch of {len(v)}" in str(out)  # its own error, run alone
            else:
                expect_doubled(out, v)
        await b.drain(5)

    run(scenario)


def test_wrong_output_rows_fail_with_a_clear_error() -> None:
    async def scenario() -> None:
        b = DynamicBatcher("bad", lambda x: {"y": np.zeros((1, 2))}, max_batch_size=4, max_queue_delay_ms=0.0,
                           max_queue_rows=8)
        await b.start()
        with pytest.raises(RuntimeError, match="must return arrays with 2 rows on axis 0"):
            await b.submit(rows([1.0, 2.0]))
        await b.drain(5)

    run(scenario)


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        ({}, "non-empty dict"),
        ({"x": [1.0, 2.0]}, "is a list, not a numpy array"),
        ({"x": np.float32(1.0)}, "is a float32, not a numpy array"),
        ({"x": np.array(1.0)}, "is a scalar"),
        ({"x": np.zeros((2, 3)), "t": np.zeros(3)}, "disagree on the number of rows"),
        ({"x": np.zeros((0, 3))}, "have 0 rows"),
    ],
)
def test_malformed_inputs_fail_only_themselves(inputs: dict[str, Any], match: str) -> None:
    async def scenario() -> None:
        fn = Doubler()
        b = await started_batcher(fn, max_batch_size=4, max_queue_delay_ms=0.0)
        with pytest.raises(MalformedInputs, match=match) as info:
            await b.submit(inputs)
        assert info.value.reason == "invalid_input"
        good = await b.submit(rows([2.0]))
        assert good["y"][0, 0] == 4.0
        await b.drain(5)

    run(scenario)


# ----------------------------------------------------------------------------- drain
def test_drain_refuses_new_work_and_finishes_everything_accepted() -> None:
    async def scenario() -> None:
        fn = Doubler()
        b = await started_batcher(fn, max_batch_size=2, max_queue_delay_ms=3_600_000.0)
        first = await occupy(b, fn)
        tasks = [asyncio.create_task(b.submit(rows([float(v)]))) for v in range(5)]
        await until(lambda: b.queue_rows == 5)
        drain = asyncio.create_task(b.drain(30))
        await asyncio.sleep(0)
        with pytest.raises(BatcherClosed) as info:
            await b.submit(rows([9.0]))
        assert info.value.reason == "shutting_down"
        fn.release()
        await drain
        outs = await asyncio.gather(first, *tasks)  # none of the accepted requests is lost
        assert [o["y"][0, 0] for o in outs] == [2000.0, 0.0, 2.0, 4.0, 6.0, 8.0]
        assert not b.running

    run(scenario)


def test_drain_timeout_fails_the_leftovers_with_batcher_closed() -> None:
    async def scenario() -> None:
        fn = Doubler()
        b = await started_batcher(fn, max_batch_size=2, max_queue_delay_ms=0.0)
        first = await occupy(b, fn)
        queued = asyncio.create_task(b.submit(rows([1.0])))
        await until(lambda: b.queue_rows == 1)
        await b.drain(0.05)  # the batch in flight never finishes in time
        for task in (first, queued):
            with pytest.raises(BatcherClosed, match="shut down before"):
                await task
        fn.release()  # let the executor thread finish

    run(scenario)


def test_submit_before_start_says_what_to_do() -> None:
    async def scenario() -> None:
        b = DynamicBatcher("x", Doubler(), max_batch_size=2, max_queue_delay_ms=0.0, max_queue_rows=4)
        with pytest.raises(RuntimeError, match=r"call `await batcher.start\(\)` first"):
            await b.submit(rows([1.0]))

    run(scenario)


def test_limits_are_checked_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="max_queue_rows .* must be >= max_batch_size"):
        DynamicBatcher("x", Doubler(), max_batch_size=8, max_queue_delay_ms=0.0, max_queue_rows=4)
    with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
        DynamicBatcher("x", Doubler(), max_batch_size=0, max_queue_delay_ms=0.0, max_queue_rows=4)
