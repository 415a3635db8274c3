"""Dynamic batching for one model component: requests (dicts of numpy arrays, rows on axis 0) are
queued, grouped into batches of up to `max_batch_size` rows and run by a blocking `run_batch` in an
executor thread, so the event loop stays free.

One asyncio task owns the queue (TGI's actor pattern): `submit` only checks admission and appends,
with no `await` in between, and every other change to the queue happens in that task. The rules for
forming batches live in service/inference/queue.py as pure functions of the clock.

This module never imports torch, nor HTTP: its errors (`service.inference.errors`) are answered by
`service.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from service.inference.errors import (
    BacklogTooLong,
    BatcherClosed,
    BatcherError,
    DeadlineExceeded,
    MalformedInputs,
    QueueFull,
    RequestTooLarge,
)
from service.inference.queue import Batch, BatchQueue, Pending, Priority, Slice, signature_of
from service.inference.threads import worker_pool

if TYPE_CHECKING:
    from service.metrics import BatcherMetrics

__all__ = ["DynamicBatcher", "Priority", "RunBatch"]

log = logging.getLogger(__name__)

# Blocking: takes each input stacked on axis 0 ([rows, ...]) and returns outputs with the same rows.
RunBatch = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def rows_of(component: str, inputs: dict[str, np.ndarray]) -> int:
    """The request's row count (axis 0, shared by every input); MalformedInputs when malformed."""
    if not isinstance(inputs, dict) or not inputs:
        raise MalformedInputs(f"inputs of component '{component}' must be a non-empty dict of numpy arrays")
    rows = {}
    for key, value in inputs.items():
        if not isinstance(value, np.ndarray):
            raise MalformedInputs(f"input '{key}' of component '{component}' is a {type(value).__name__}, not a numpy array")
        if value.ndim == 0:
            raise MalformedInputs(f"input '{key}' of component '{component}' is a scalar; axis 0 must be the batch axis")
        rows[key] = value.shape[0]
    if len(set(rows.values())) != 1:
        raise MalformedInputs(
            f"inputs of component '{component}' disagree on the number of rows (axis 0): {rows}; "
            "every input must have the same batch size"
        )
    n = next(iter(rows.values()))
    if n == 0:
        raise MalformedInputs(f"inputs of component '{component}' have 0 rows; send at least one")
    return n


# ----------------------------------------------------------------------------- execution (executor thread)
@dataclass
class _Executed:
    outcomes: list[dict[str, np.ndarray] | Exception]  # one per slice of the batch
    runs: list[tuple[int, float]]  # (rows, seconds) of each successful run_batch call


def _checked(outputs: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    if not isinstance(outputs, dict) or not outputs:
        raise RuntimeError(f"run_batch must return a non-empty dict of numpy arrays; got {type(outputs).__name__}")
    bad = {k: getattr(v, "shape", type(v).__name__) for k, v in outputs.items()
           if not isinstance(v, np.ndarray) or v.ndim == 0 or v.shape[0] != rows}
    if bad:
        raise RuntimeError(f"run_batch must return arrays with {rows} rows on axis 0; got {bad}")
    return outputs


def _execute(run_batch: RunBatch, batch: Batch) -> _Executed:
    """Run a batch; if it fails and holds several requests, run each alone so only the bad ones fail."""
    runs: list[tuple[int, float]] = []

    def timed(inputs: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        out = _checked(run_batch(inputs), rows)
        runs.append((rows, time.perf_counter() - t0))
        return out

    def alone(s: Slice) -> dict[str, np.ndarray] | Exception:
        try:
            return timed(s.inputs(), s.rows)
        except Exception as e:
            return e

    try:
        out = timed(batch.stacked_inputs(), batch.rows)  # each [batch rows, ...]
    except Exception as e:
        return _Executed([e] if len(batch.slices) == 1 else [alone(s) for s in batch.slices], runs)
    bounds = np.cumsum([0] + [s.rows for s in batch.slices])
    return _Executed([{k: v[a:b] for k, v in out.items()} for a, b in zip(bounds[:-1], bounds[1:], strict=True)], runs)


def _assemble(request: Pending) -> dict[str, np.ndarray]:
    """A request's outputs from its chunks (one per batch it was split across), in row order."""
    if len(request.chunks) == 1:
        return request.chunks[0][1]
    chunks = [c for _, c in sorted(request.chunks, key=lambda c: c[0])]
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


# ----------------------------------------------------------------------------- the batcher
class DynamicBatcher:
    """Batches one component's requests; see the module docstring and DESIGN.md "Serving"."""

    def __init__(
        self,
        name: str,
        run_batch: RunBatch,
        *,
        max_batch_size: int,
        max_queue_delay_ms: float,
        max_queue_rows: int,
        max_queue_wait_s: float | None = None,
        metrics: BatcherMetrics | None = None,
        executor: Executor | None = None,
        nice: int = 0,
    ) -> None:
        """`nice`: when the batcher makes its own thread, it runs this much below the event loop
        (service.inference.threads); onnxruntime's pools started from it inherit that."""
        if max_queue_rows < max_batch_size:
            raise ValueError(
                f"max_queue_rows ({max_queue_rows}) of batcher '{name}' must be >= max_batch_size ({max_batch_size}), "
                "or no batch could ever fill; raise max_queue_rows"
            )
        self.name = name
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_queue_delay_ms = max_queue_delay_ms
        self.max_queue_rows = max_queue_rows
        self.max_queue_wait_s = max_queue_wait_s  # admission by estimated wait, not only by rows
        self.metrics = metrics
        self._queue = BatchQueue(max_batch_size, max_queue_delay_ms / 1000.0)
        self._executor = executor
        self._own_executor = executor is None
        self._nice = nice
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._accepting = False
        self._inflight: asyncio.Future[_Executed] | None = None
        self._inflight_batch: Batch | None = None
        self._seconds_per_row: float | None = None  # recent compute time per row, for Retry-After

    @property
    def queue_rows(self) -> int:
        """Rows waiting in the queue (not counting the batch being computed)."""
        return self._queue.rows

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self.running:
            return
        if self._executor is None:
            self._executor = worker_pool(1, f"batcher-{self.name}", self._nice)
        self._accepting = True
        self._task = asyncio.create_task(self._own_queue(), name=f"batcher-{self.name}")

    async def submit(
        self,
        inputs: dict[str, np.ndarray],
        *,
        priority: Priority = Priority.INTERACTIVE,
        deadline: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Queue `inputs` ([rows, ...] each) and return the outputs for those rows, in the same order.

        `deadline` is an absolute `time.monotonic()`. Raises QueueFull, DeadlineExceeded,
        BatcherClosed, MalformedInputs, RequestTooLarge, or whatever run_batch raised for these rows.
        """
        if self._task is None:
            raise RuntimeError(f"batcher '{self.name}' is not running: call `await batcher.start()` first")
        if not self._accepting:
            self._reject("shutting_down")
            raise BatcherClosed(f"the service is shutting down; '{self.name}' accepts no new requests")
        rows = rows_of(self.name, inputs)
        now = time.monotonic()
        if deadline is not None and deadline <= now:
            self._reject("deadline")
            raise DeadlineExceeded(f"the request's deadline passed before it reached the '{self.name}' queue")
        if rows > self.max_queue_rows:
            self._reject("too_large")
            raise RequestTooLarge(
                f"{rows} rows for '{self.name}' can never fit its queue of {self.max_queue_rows} rows; "
                "send fewer rows per request or raise max_queue_rows"
            )
        if self._queue.rows + rows > self.max_queue_rows:
            self._reject("queue_full")
            retry = self._retry_after(rows)
            raise QueueFull(
                f"the '{self.name}' queue is full ({self._queue.rows} of {self.max_queue_rows} rows queued); "
                f"retry in about {retry:.2f} s",
                retry_after_s=retry,
            )
        self.check_wait(Priority(priority))
        request = Pending(
            inputs=inputs, rows=rows, priority=Priority(priority), arrival=now, deadline=deadline,
            signature=signature_of(inputs), future=asyncio.get_running_loop().create_future(),
        )
        self._queue.push(request)
        self._depth_changed()
        self._wakeup.set()
        try:
            return await request.future
        except asyncio.CancelledError:  # the caller went away (client disconnected): never compute its rows
            if self._queue.remove(request):
                self._reject("cancelled")
                self._depth_changed()
            raise

    async def drain(self, timeout_s: float) -> None:
        """Stop accepting (BatcherClosed), finish queued and in-flight work, then return; whatever is
        still unfinished after `timeout_s` fails with BatcherClosed."""
        self._accepting = False
        self._wakeup.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._fail_everything(BatcherClosed(f"the service shut down before '{self.name}' finished this request"))
        finally:
            if self._own_executor and self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ the owner task
    async def _own_queue(self) -> None:
        try:
            while True:
                self._wakeup.clear()
                now = time.monotonic()
                for request in self._queue.expired(now):
                    self._fail(request, DeadlineExceeded(f"the request's deadline passed while queued for '{self.name}'"))
                if self._inflight is not None and self._inflight.done():
                    self._complete(self._inflight.result())
                wake_at = None
                if self._inflight is None:
                    nxt = self._queue.next_batch(now, flush=not self._accepting)
                    if isinstance(nxt, Batch):
                        self._dispatch(nxt, now)
                        continue
                    wake_at = nxt
                    if nxt is None and not self._accepting:
                        return  # drained: nothing queued, nothing in flight
                times = [t for t in (wake_at, self._queue.next_deadline()) if t is not None]
                await self._sleep(min(times) - now if times else None)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug here must not leave callers waiting forever
            log.exception("batcher '%s' stopped", self.name)
            self._fail_everything(e)
            raise

    async def _sleep(self, seconds: float | None) -> None:
        """Until a submit, a cancellation, the batch in flight finishing, or `seconds` pass."""
        if seconds is None:
            await self._wakeup.wait()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(seconds, 0.0)):
                await self._wakeup.wait()

    def _dispatch(self, batch: Batch, now: float) -> None:
        self._depth_changed()
        if self.metrics is not None:
            for s in batch.slices:
                if s.start == 0:  # a request's queue time ends when its first rows run
                    self.metrics.observe_queue(now - s.request.arrival)
        self._inflight_batch = batch
        self._inflight = asyncio.get_running_loop().run_in_executor(self._executor, _execute, self.run_batch, batch)
        self._inflight.add_done_callback(lambda _: self._wakeup.set())

    def _complete(self, executed: _Executed) -> None:
        batch, self._inflight, self._inflight_batch = self._inflight_batch, None, None
        assert batch is not None
        for rows, seconds in executed.runs:
            if self.metrics is not None:
                self.metrics.observe_batch(rows, seconds)
            per_row = seconds / rows
            self._seconds_per_row = per_row if self._seconds_per_row is None else 0.8 * self._seconds_per_row + 0.2 * per_row
        now = time.monotonic()
        for s, outcome in zip(batch.slices, executed.outcomes, strict=True):
            self._deliver(s, outcome, now)

    def _deliver(self, s: Slice, outcome: dict[str, np.ndarray] | Exception, now: float) -> None:
        request = s.request
        if request.future.done():  # cancelled by its caller, or an earlier chunk failed
            return
        if isinstance(outcome, Exception):
            self._fail(request, outcome)
            return
        if request.deadline is not None and request.deadline < now:
            self._fail(request, DeadlineExceeded(f"the request's deadline passed while '{self.name}' computed it"))
            return
        request.chunks.append((s.start, outcome))
        request.done_rows += s.rows
        if request.done_rows == request.rows:
            request.future.set_result(_assemble(request))

    def _fail(self, request: Pending, error: Exception) -> None:
        if self._queue.remove(request):  # the rest of a split request will not run either
            self._depth_changed()
        if isinstance(error, BatcherError):
            self._reject(error.reason)
        if not request.future.done():
            request.future.set_exception(error)

    def _fail_everything(self, error: Exception) -> None:
        pending = list(self._queue)
        if self._inflight_batch is not None:
            pending += [s.request for s in self._inflight_batch.slices]
            if self._inflight is not None:
                self._inflight.cancel()
            self._inflight, self._inflight_batch = None, None
        for request in dict.fromkeys(pending):  # a request may sit in both places; fail it once
            self._fail(request, error)

    # ------------------------------------------------------------------ bookkeeping
    def check_wait(self, priority: Priority, share: float = 1.0) -> None:
        """Raise BacklogTooLong (429 with Retry-After) when the work queued ahead of a request at
        `priority` is estimated to take longer than `share` of the wait budget. `submit` checks the
        whole budget; a route checks a share of it at the door, before the request's body is read
        and decoded, which leaves the rest for what the requests already past the door will add."""
        wait = self.estimated_wait(priority)
        if self.max_queue_wait_s is None or wait is None:
            return
        budget = share * self.max_queue_wait_s
        if wait <= budget:
            return
        self._reject("queue_wait")
        retry = round(max(wait - budget, 0.001), 3)  # until the backlog is within budget
        raise BacklogTooLong(
            f"about {wait:.2f} s of '{self.name}' work is queued ahead of this request, more than its "
            f"{budget:g} s budget; retry in about {retry:.2f} s",
            retry_after_s=retry,
        )

    def estimated_wait(self, priority: Priority) -> float | None:
        """Seconds before a request at `priority` would start: the batch in flight and the queued rows
        that run before it (its level and above), at the recent compute time per row; None until a
        batch has been measured."""
        if self._seconds_per_row is None:
            return None
        ahead = sum(r.rows for r in self._queue if r.priority <= priority)
        in_flight = self._inflight_batch.rows if self._inflight_batch is not None else 0
        return (ahead + in_flight) * self._seconds_per_row

    def _retry_after(self, rows: int) -> float:
        """Seconds until enough queued rows have run for `rows` more to fit, from recent compute time."""
        if self._seconds_per_row is None:
            return 1.0  # nothing measured yet
        # a full queue sends full batches at once (no delay); the batch in flight finishes first
        must_run = self._queue.rows + rows - self.max_queue_rows + self.max_batch_size
        return round(max(must_run * self._seconds_per_row, 0.001), 3)

    def _reject(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.reject(reason)

    def _depth_changed(self) -> None:
        if self.metrics is not None:
            self.metrics.set_queue_depth(self._queue.rows)
