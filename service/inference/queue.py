"""The batcher's queue and batch planner: pure bookkeeping, no asyncio, no threads, no model code.

`DynamicBatcher` (service/inference/batching.py) owns one `BatchQueue` and is the only code that touches it;
everything here takes `now` as an argument, so the scheduling rules (row limits, the delay timed
from the first arrival, priorities, grouping by input signature, splitting oversized requests) are
tested as plain functions of the clock.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np

# (key, dtype, shape without the batch axis) for each input, sorted by key: requests batch together
# only when these match exactly (e.g. clips of different T never share a batch).
Signature = tuple[tuple[str, str, tuple[int, ...]], ...]


class Priority(IntEnum):
    """Lower runs first: a control loop's session step before one-off plans before interactive
    calls before renders (a session step has a control period to meet; a plan is waited on)."""

    SESSION = 0
    PLAN = 1
    INTERACTIVE = 2
    RENDER = 3


def signature_of(inputs: dict[str, np.ndarray]) -> Signature:
    return tuple(sorted((k, v.dtype.str, tuple(v.shape[1:])) for k, v in inputs.items()))


_seq = itertools.count()


@dataclass(eq=False)
class Pending:
    """One submitted request while any of its rows are still queued or computing."""

    inputs: dict[str, np.ndarray]  # each [rows, ...]
    rows: int
    priority: Priority
    arrival: float  # time.monotonic() at submit
    deadline: float | None  # absolute time.monotonic(); None: no deadline
    signature: Signature
    future: Any = None  # asyncio.Future resolved by the batcher; opaque here
    seq: int = field(default_factory=lambda: next(_seq))  # FIFO order within a priority level
    next_row: int = 0  # rows before this one have been handed to a batch
    done_rows: int = 0  # rows whose outputs came back
    chunks: list[tuple[int, dict[str, np.ndarray]]] = field(default_factory=list)  # (start row, outputs)
    first_dispatch: float | None = None  # when its first rows left the queue

    @property
    def queued_rows(self) -> int:
        return self.rows - self.next_row

    @property
    def order(self) -> tuple[int, int]:
        return (int(self.priority), self.seq)


@dataclass(frozen=True)
class Slice:
    """Rows [start, stop) of one request, as placed in a batch."""

    request: Pending
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def inputs(self) -> dict[str, np.ndarray]:
        return {k: v[self.start : self.stop] for k, v in self.request.inputs.items()}


@dataclass(frozen=True)
class Batch:
    slices: tuple[Slice, ...]

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.slices)

    def stacked_inputs(self) -> dict[str, np.ndarray]:
        """The slices' inputs concatenated on axis 0, in batch order: each [batch rows, ...]."""
        if len(self.slices) == 1:
            return self.slices[0].inputs()
        keys = self.slices[0].request.inputs.keys()
        return {k: np.concatenate([s.request.inputs[k][s.start : s.stop] for s in self.slices]) for k in keys}


class BatchQueue:
    """Queued requests in (priority, arrival) order, and the rule that turns them into batches.

    A batch is formed from the group (input signature) of the first request in priority order.
    Requests join it in priority order while they fit; a request is never split to fill a batch,
    except one larger than `max_batch_size`, which is cut into chunks (the first chunk may fill the
    rest of a batch). The batch leaves at once when it is as full as it can get or carries the rest
    of a cut request, else when the group's oldest request has waited `max_queue_delay_s`, or at
    once when flushing (draining).
    """

    def __init__(self, max_batch_size: int, max_queue_delay_s: float) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 (got {max_batch_size}); use 1 to turn batching off")
        if max_queue_delay_s < 0:
            raise ValueError(f"max_queue_delay_ms must be >= 0 (got {max_queue_delay_s * 1000:g})")
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self._items: list[Pending] = []  # sorted by Pending.order
        self.rows = 0  # rows queued (not yet handed to a batch)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Pending]:  # queued requests, in priority order
        return iter(list(self._items))

    def push(self, item: Pending) -> None:
        bisect.insort(self._items, item, key=lambda p: p.order)
        self.rows += item.queued_rows

    def remove(self, item: Pending) -> bool:
        """Drop a request's queued rows (cancelled, failed or expired); False if it had none queued."""
        try:
            self._items.remove(item)
        except ValueError:
            return False
        self.rows -= item.queued_rows
        return True

    def expired(self, now: float) -> list[Pending]:
        """Remove and return the requests whose deadline has passed while queued."""
        gone = [p for p in self._items if p.deadline is not None and p.deadline <= now]
        for p in gone:
            self.remove(p)
        return gone

    def next_deadline(self) -> float | None:
        deadlines = [p.deadline for p in self._items if p.deadline is not None]
        return min(deadlines) if deadlines else None

    def _plan(self) -> tuple[list[tuple[Pending, int]], bool]:
        """[(request, rows to take)] for the next batch, and whether it is as full as it can get."""
        head = self._items[0]
        room, plan = self.max_batch_size, []
        for item in self._items:
            if item.signature != head.signature:
                continue
            take = item.queued_rows
            if take > room:
                if item.rows > self.max_batch_size or not plan:  # oversized: cut it to fill the batch
                    plan.append((item, room))
                return plan, True  # the next request of the group does not fit: nothing to wait for
            plan.append((item, take))
            room -= take
            if room == 0:
                return plan, True
        return plan, False

    def next_batch(self, now: float, *, flush: bool = False) -> Batch | float | None:
        """The batch to run now; or the monotonic time at which to look again; or None when empty."""
        if not self._items:
            return None
        plan, full = self._plan()
        # the rest of a request already cut into chunks goes at once: part of it has run, it is late enough
        if not (full or flush or any(p.next_row > 0 for p, _ in plan)):
            due = min(p.arrival for p, _ in plan) + self.max_queue_delay_s
            if now < due:
                return due
        slices = []
        for item, take in plan:
            slices.append(Slice(item, item.next_row, item.next_row + take))
            if item.first_dispatch is None:
                item.first_dispatch = now
            item.next_row += take
            self.rows -= take
            if item.queued_rows == 0:
                self._items.remove(item)
        return Batch(tuple(slices))
