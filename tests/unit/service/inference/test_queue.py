"""The batch planner as a pure function of the clock: row limits, the delay timed from the first
arrival, priorities, grouping by input signature and the splitting of oversized requests."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.inference.queue import Batch, BatchQueue, Pending, Priority, signature_of


def request(rows: int, *, arrival: float = 0.0, priority: Priority = Priority.INTERACTIVE, width: int = 3,
            deadline: float | None = None, tag: float = 0.0) -> Pending:
    x = np.full((rows, width), tag, dtype=np.float32)
    x[:, 0] = np.arange(rows)  # row index, to check order and coverage
    inputs = {"x": x}
    return Pending(inputs=inputs, rows=rows, priority=priority, arrival=arrival, deadline=deadline,
                   signature=signature_of(inputs))


def layout(batch: Batch) -> list[tuple[Pending, int, int]]:
    return [(s.request, s.start, s.stop) for s in batch.slices]


@pytest.mark.parametrize("delay", [0.005, 0.05, 2.0])
@pytest.mark.parametrize("max_batch", [3, 4, 8])
def test_partial_batch_waits_max_delay_from_its_first_arrival(max_batch: int, delay: float) -> None:
    q = BatchQueue(max_batch, delay)
    first = request(1, arrival=10.0)
    q.push(first)
    assert q.next_batch(10.0) == pytest.approx(10.0 + delay)  # look again when the first has waited `delay`
    late = request(1, arrival=10.0 + delay / 2)
    q.push(late)
    # the timer runs from the first arrival: a later arrival does not push the batch back
    assert q.next_batch(10.0 + delay * 0.9) == pytest.approx(10.0 + delay)
    batch = q.next_batch(10.0 + delay)
    assert isinstance(batch, Batch) and [r for r, *_ in layout(batch)] == [first, late]
    assert q.rows == 0 and len(q) == 0 and q.next_batch(100.0) is None


@pytest.mark.parametrize("max_batch", [1, 2, 4])
def test_zero_delay_sends_what_is_queued_at_once(max_batch: int) -> None:
    q = BatchQueue(max_batch, 0.0)
    q.push(request(1, arrival=10.0))
    batch = q.next_batch(10.0)
    assert isinstance(batch, Batch) and batch.rows == 1


def test_full_batch_leaves_without_waiting_for_the_delay() -> None:
    q = BatchQueue(4, max_queue_delay_s=60.0)
    reqs = [request(2), request(1), request(1)]
    for r in reqs:
        q.push(r)
    batch = q.next_batch(0.0)
    assert isinstance(batch, Batch) and batch.rows == 4 and [r for r, *_ in layout(batch)] == reqs


def test_a_request_that_does_not_fit_leaves_the_batch_as_full_as_it_gets() -> None:
    q = BatchQueue(4, max_queue_delay_s=60.0)
    a, b = request(3), request(2)
    q.push(a)
    q.push(b)
    batch = q.next_batch(0.0)  # 3 rows, and b (2 rows) does not fit: nothing to wait for
    assert layout(batch) == [(a, 0, 3)]
    assert q.next_batch(0.0) == pytest.approx(60.0)  # b alone waits for company
    assert layout(q.next_batch(60.0, flush=False)) == [(b, 0, 2)]


def test_priorities_order_the_batch_plan_first_then_fifo() -> None:
    q = BatchQueue(8, max_queue_delay_s=0.0)
    render = request(1, priority=Priority.RENDER, arrival=0.0)
    inter1 = request(1, priority=Priority.INTERACTIVE, arrival=1.0)
    plan1 = request(1, priority=Priority.PLAN, arrival=2.0)
    inter2 = request(1, priority=Priority.INTERACTIVE, arrival=3.0)
    plan2 = request(1, priority=Priority.PLAN, arrival=4.0)
    for r in (render, inter1, plan1, inter2, plan2):
        q.push(r)
    assert [r for r, *_ in layout(q.next_batch(5.0))] == [plan1, plan2, inter1, inter2, render]


def test_priorities_decide_which_requests_run_when_not_all_fit() -> None:
    q = BatchQueue(2, max_queue_delay_s=0.0)
    render, inter, plan = request(1, priority=Priority.RENDER), request(1), request(1, priority=Priority.PLAN)
    for r in (render, inter, plan):
        q.push(r)
    assert [r for r, *_ in layout(q.next_batch(0.0))] == [plan, inter]
    assert [r for r, *_ in layout(q.next_batch(0.0))] == [render]


def test_only_requests_with_the_same_signature_share_a_batch() -> None:
    q = BatchQueue(8, max_queue_delay_s=0.0)
    a, other, b = request(1, width=3), request(1, width=5), request(1, width=3)
    f64 = Pending(inputs={"x": np.zeros((1, 3))}, rows=1, priority=Priority.INTERACTIVE, arrival=0.0, deadline=None,
                  signature=signature_of({"x": np.zeros((1, 3))}))
    for r in (a, other, b, f64):
        q.push(r)
    assert [r for r, *_ in layout(q.next_batch(0.0))] == [a, b]
    assert [r for r, *_ in layout(q.next_batch(0.0))] == [other]
    assert [r for r, *_ in layout(q.next_batch(0.0))] == [f64]


@pytest.mark.parametrize(("max_batch", "rows"), [(4, 10), (4, 8), (3, 4), (1, 3)])
def test_oversized_request_is_cut_into_chunks(max_batch: int, rows: int) -> None:
    q = BatchQueue(max_batch, max_queue_delay_s=60.0)
    big = request(rows)
    q.push(big)
    chunks = []
    while (batch := q.next_batch(0.0, flush=True)) is not None:
        chunks += [(start, stop) for _, start, stop in layout(batch)]
    bounds = list(range(0, rows, max_batch)) + [rows]
    assert chunks == list(zip(bounds[:-1], bounds[1:], strict=True))


def test_oversized_request_fills_the_rest_of_a_batch() -> None:
    q = BatchQueue(4, max_queue_delay_s=60.0)
    small, big = request(1), request(6)
    q.push(small)
    q.push(big)
    assert layout(q.next_batch(0.0)) == [(small, 0, 1), (big, 0, 3)]
    assert layout(q.next_batch(0.0)) == [(big, 3, 6)]  # the remainder keeps its arrival time: due at once


def test_expired_requests_leave_the_queue() -> None:
    q = BatchQueue(4, max_queue_delay_s=60.0)
    keep, drop = request(1, deadline=None), request(2, deadline=5.0)
    q.push(keep)
    q.push(drop)
    assert q.next_deadline() == 5.0
    assert q.expired(4.9) == []
    assert q.expired(5.0) == [drop]
    assert q.rows == 1 and q.next_deadline() is None


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
        BatchQueue(0, 0.0)
    with pytest.raises(ValueError, match="max_queue_delay_ms must be >= 0"):
        BatchQueue(4, -0.001)


@settings(max_examples=60, deadline=None)
@given(
    max_batch=st.integers(1, 8),
    reqs=st.lists(st.tuples(st.integers(1, 12), st.sampled_from(list(Priority)), st.sampled_from([3, 5])),
                  min_size=1, max_size=12),
)
def test_every_row_runs_once_in_order_within_limits(max_batch: int, reqs: list[tuple[int, Priority, int]]) -> None:
    q = BatchQueue(max_batch, max_queue_delay_s=0.0)
    pending = [request(rows, priority=p, width=w, arrival=float(i)) for i, (rows, p, w) in enumerate(reqs)]
    for r in pending:
        q.push(r)
    assert q.rows == sum(r.rows for r in pending)
    covered: dict[int, list[tuple[int, int]]] = {id(r): [] for r in pending}
    while (batch := q.next_batch(100.0)) is not None:
        assert 1 <= batch.rows <= max_batch
        assert len({s.request.signature for s in batch.slices}) == 1
        priorities = [s.request.priority for s in batch.slices]
        assert priorities == sorted(priorities)
        x = batch.stacked_inputs()["x"]  # [batch rows, width]: the row indices of each slice, in order
        assert x.shape[0] == batch.rows
        offset = 0
        for s in batch.slices:
            np.testing.assert_array_equal(x[offset : offset + s.rows, 0], np.arange(s.start, s.stop))
            offset += s.rows
            covered[id(s.request)].append((s.start, s.stop))
            if s.request.rows <= max_batch:
                assert (s.start, s.stop) == (0, s.request.rows)  # requests that fit are never split
    assert q.rows == 0 and len(q) == 0
    for r in pending:
        spans = covered[id(r)]
        assert spans[0][0] == 0 and spans[-1][1] == r.rows
        assert all(a[1] == b[0] for a, b in zip(spans[:-1], spans[1:], strict=True))
