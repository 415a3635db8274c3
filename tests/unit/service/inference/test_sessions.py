"""The plan-session store: lifecycle, limits, TTL, one step at a time, and the warm start it hands out."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import answer_for
from service.inference.sessions import (
    SessionBusy,
    SessionSpec,
    SessionStore,
    StepOutOfOrder,
    TooManySessions,
    UnknownSession,
    shifted,
    warm_config,
)
from training.planning import PlannerConfig


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def spec(ttl_s: float = 10.0, execute: int = 1) -> SessionSpec:
    cold = PlannerConfig(action_low=(-1.0,), action_high=(1.0,), horizon=4, samples=40, elites=4, iterations=6)
    return SessionSpec(cold=cold, warm=warm_config(cold, None, None), goal=np.zeros((2, 3), np.float32),
                       goal_id="goal-x", ttl_s=ttl_s, control_period_s=None, execute=execute, history=3)


def test_lifecycle_steps_and_delete() -> None:
    store = SessionStore(4, Clock())
    session = store.create(spec())
    assert store.get(session.id) is session and session.warm_start() is None
    assert session.config() == spec().cold  # the first step is cold, seed 0
    claimed = store.begin_step(session.id, step=0)
    plan = np.arange(4, dtype=np.float32)[:, None]  # [H=4, A=1]
    store.finish_step(claimed, np.ones((2, 3), np.float32), plan)
    assert session.steps == 1 and not session.busy and len(session.history) == 1
    cfg = session.config()  # warm: fewer samples and iterations, a new seed
    assert (cfg.samples, cfg.iterations, cfg.seed) == (10, 2, 1)
    store.delete(session.id)
    with pytest.raises(UnknownSession):
        store.get(session.id)
    with pytest.raises(UnknownSession):
        store.delete(session.id)


def test_warm_start_is_the_previous_plan_shifted_by_the_executed_actions() -> None:
    plan = np.array([[0.5], [1.5], [2.5], [3.5]], np.float32)
    np.testing.assert_array_equal(shifted(plan, 1), [[1.5], [2.5], [3.5], [3.5]])
    np.testing.assert_array_equal(shifted(plan, 2), [[2.5], [3.5], [3.5], [3.5]])
    np.testing.assert_array_equal(shifted(plan, 9), [[3.5]] * 4)  # never beyond the plan
    store = SessionStore(4, Clock())
    session = store.create(spec(execute=2))
    store.finish_step(store.begin_step(session.id), np.zeros((2, 3), np.float32), plan)
    np.testing.assert_array_equal(session.warm_start(), shifted(plan, 2))


def test_history_keeps_the_newest_states_only() -> None:
    store = SessionStore(4, Clock())
    session = store.create(spec())
    for i in range(5):
        store.finish_step(store.begin_step(session.id), np.full((2, 3), i, np.float32), np.zeros((4, 1), np.float32))
    assert [float(s[0, 0]) for s in session.history] == [2.0, 3.0, 4.0]


def test_count_limit_ttl_and_busy() -> None:
    clock = Clock()
    store = SessionStore(2, clock)
    a, b = store.create(spec(ttl_s=10)), store.create(spec(ttl_s=30))
    with pytest.raises(TooManySessions) as full:
        store.create(spec())
    answer = answer_for(full.value)
    assert (answer.status, answer.code, answer.headers) == (429, "too_many_sessions", {"Retry-After": "1"})

    store.begin_step(b.id)
    with pytest.raises(SessionBusy):  # one step at a time
        store.begin_step(b.id)
    assert answer_for(SessionBusy(b.id)).status == 409
    clock.now += 40  # both past their TTL, but b is mid-step and stays
    assert store.sweep() == 1 and len(store) == 1
    with pytest.raises(UnknownSession):
        store.get(a.id)
    store.abandon_step(b)  # a failed step releases the session and renews its lease
    assert not b.busy and b.steps == 0 and b.plan is None
    store.create(spec())  # room again
    clock.now += 31
    with pytest.raises(UnknownSession):
        store.begin_step(b.id)


def test_numbered_steps_must_come_in_order() -> None:
    store = SessionStore(2, Clock())
    session = store.create(spec())
    with pytest.raises(StepOutOfOrder):
        store.begin_step(session.id, step=1)
    store.finish_step(store.begin_step(session.id, step=0), np.zeros((2, 3), np.float32), np.zeros((4, 1), np.float32))
    with pytest.raises(StepOutOfOrder) as late:
        store.begin_step(session.id, step=0)
    assert answer_for(late.value).status == 409 and "expects step 1" in late.value.message
