"""A CPU stage with admission: bounded concurrency, a backlog measured in work, 429 before the queue.

Decoding an upload costs more CPU than the model does on small hardware; run on unbounded threads,
every upload in flight decodes at once, each slows the others down, and the model's queues (behind
it) never fill, so nothing is ever refused and everyone waits. A `Stage` runs at most `concurrency`
jobs at once (about one per core) in its own threads; the others wait in a backlog counted in work
units (frames for decoding). A request is admitted only while

- the backlog (waiting + running work) stays under `max_backlog` units, and
- the backlog's estimated wait, `backlog x seconds-per-unit / concurrency` with seconds-per-unit
  measured on the work this stage finished, stays under `max_wait_s`;

otherwise it is refused at once with `QueueFull` (429) and a `Retry-After` of the seconds the
backlog needs to come back under the budget. Refusing at the door costs nothing; a request queued
past its client's patience costs its full price and helps no one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from service.inference.errors import DeadlineExceeded, QueueFull
from service.inference.threads import worker_pool

if TYPE_CHECKING:
    from service.metrics import BatcherMetrics

T = TypeVar("T")

# Share of a wait budget a request may find queued when it arrives (before its body is read); the
# rest is headroom for the requests already admitted and still being read or decoded.
DOOR_SHARE = 0.5
# Weight of the newest measurement in the seconds-per-unit average: recent enough to follow a
# change of load, smooth enough that one odd file does not swing the estimate.
_EWMA = 0.2


class Stage:
    """See the module docstring. One per kind of work (e.g. "decode"), shared by every route."""

    def __init__(
        self, name: str, concurrency: int, max_backlog: float, max_wait_s: float, metrics: BatcherMetrics | None = None,
        nice: int = 0,
    ) -> None:
        """`nice`: the stage's threads run this much below the event loop (service.inference.threads)."""
        if concurrency < 1:
            raise ValueError(f"stage {name!r}: concurrency must be >= 1, got {concurrency}")
        self.name, self.concurrency = name, concurrency
        self.max_backlog, self.max_wait_s = max_backlog, max_wait_s
        self.backlog = 0.0  # work admitted and not finished (waiting or running)
        self.seconds_per_unit: float | None = None  # measured; None until the first job finished
        self.metrics = metrics  # lawm_queue_depth{component=name} in work units, lawm_rejections_total
        self._slots = asyncio.Semaphore(concurrency)
        self._executor = worker_pool(concurrency, f"stage-{name}", nice)

    def estimated_wait_s(self, extra: float = 0.0) -> float | None:
        """Seconds until `backlog + extra` units are done at the measured rate (None: not measured yet)."""
        if self.seconds_per_unit is None:
            return None
        return (self.backlog + extra) * self.seconds_per_unit / self.concurrency

    def admit(self, work: float, share: float = 1.0) -> None:
        """Raise QueueFull (with Retry-After) unless `work` more units fit within `share` of the
        wait budget; see the module docstring."""
        if self.backlog == 0:
            return  # an idle stage takes anything: one request is never refused for its own size
        budget = share * self.max_wait_s
        wait = self.estimated_wait_s(work)
        over_work = self.backlog + work > self.max_backlog
        over_time = wait is not None and wait > budget
        if not (over_work or over_time):
            return
        rate = self.seconds_per_unit
        # seconds until enough of the backlog is done for this request to fit again
        excess = max(self.backlog + work - self.max_backlog, 0.0)
        if rate is not None:
            excess = max(excess, self.backlog + work - budget * self.concurrency / rate)
        retry = excess * rate / self.concurrency if rate is not None else 1.0
        why = (f"its estimated wait is {wait:.1f} s (budget {budget:g} s)" if over_time
               else f"it holds {self.backlog:g} units of work (at most {self.max_backlog:g})")
        self._reject("queue_full")
        raise QueueFull(f"the '{self.name}' stage is full: {why}", retry_after_s=max(retry, 1.0))

    def at_the_door(self) -> None:
        """Before a request's body is read: refuse it at once (QueueFull) when the work already
        admitted is over DOOR_SHARE of the budget even for the smallest request. Reading and probing
        an upload costs CPU and time that a request refused afterwards should never have had; the
        rest of the budget is kept for the uploads already past the door, so that few of them are
        refused late, after their body was read."""
        self.admit(1.0, DOOR_SHARE)

    async def run(self, fn: Callable[[], T], work: float, deadline: float | None = None) -> T:
        """Admit `work` units (or raise QueueFull), wait for a slot, run `fn()` in the stage's
        threads, and learn its seconds per unit. With a `deadline` (absolute `time.monotonic()`),
        work that would only start past it is refused (DeadlineExceeded) rather than done in vain."""
        work = max(float(work), 1.0)
        self.admit(work)
        wait = self.estimated_wait_s()
        if deadline is not None and wait is not None and time.monotonic() + wait > deadline:
            self._reject("deadline")
            raise DeadlineExceeded(f"the '{self.name}' backlog ({wait:.1f} s) would outlast the request's deadline")
        self._set_backlog(self.backlog + work)
        try:
            async with self._slots:
                if deadline is not None and time.monotonic() >= deadline:
                    self._reject("deadline")
                    raise DeadlineExceeded(f"the request's deadline passed while it waited for '{self.name}'")
                started = time.perf_counter()
                result = await asyncio.get_running_loop().run_in_executor(self._executor, fn)
                per_unit = (time.perf_counter() - started) / work
                self.seconds_per_unit = (
                    per_unit if self.seconds_per_unit is None
                    else (1 - _EWMA) * self.seconds_per_unit + _EWMA * per_unit
                )
                return result
        finally:
            self._set_backlog(self.backlog - work)

    def _set_backlog(self, backlog: float) -> None:
        self.backlog = backlog
        if self.metrics is not None:
            self.metrics.set_queue_depth(round(backlog))

    def _reject(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.reject(reason)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
