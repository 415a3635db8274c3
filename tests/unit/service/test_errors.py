"""Domain errors of the inference and job layers, answered over HTTP in one place (`answer_for`)."""

from __future__ import annotations

import pytest

from exporters.errors import InvalidInputs
from service.errors import answer_for
from service.inference.errors import (
    BatcherClosed,
    DeadlineExceeded,
    MalformedInputs,
    MissingComponent,
    ModelNotReady,
    PlanRejected,
    QueueFull,
    RequestTooLarge,
    TooManyPlans,
)
from service.jobs.store import StoreUnavailable


@pytest.mark.parametrize(
    ("error", "status", "code", "retry_after"),
    [
        (ModelNotReady("warming"), 503, "not_ready", "1"),
        (MissingComponent("demo", 1, "controller", ["encoder"]), 409, "no_controller", None),
        (MissingComponent("demo", 1, "decoder", ["encoder"]), 409, "missing_component", None),
        (PlanRejected("plan_too_large", "too many"), 422, "plan_too_large", None),
        (TooManyPlans(32), 429, "overloaded", "1"),
        (QueueFull("the queue is full", retry_after_s=2.2), 429, "overloaded", "3"),
        (DeadlineExceeded("too late"), 504, "deadline_exceeded", None),
        (BatcherClosed("closing"), 503, "shutting_down", None),
        (RequestTooLarge("5 rows"), 413, "too_large", None),
        (MalformedInputs("0 rows"), 422, "invalid_input", None),
        (StoreUnavailable(ConnectionError("refused")), 503, "jobs_unavailable", "5"),
        (InvalidInputs("idm.states must be float32"), 422, "invalid_input", None),
    ],
)
def test_each_domain_error_has_its_status_code_and_retry_after(
    error: Exception, status: int, code: str, retry_after: str | None
) -> None:
    answer = answer_for(error)  # type: ignore[arg-type]
    assert (answer.status, answer.code) == (status, code)
    assert (answer.headers or {}).get("Retry-After") == retry_after
    assert answer.message and answer.message == getattr(error, "message", str(error))


def test_hints_say_how_to_fix_it() -> None:
    assert "lawm train controller" in (answer_for(MissingComponent("demo", 1, "controller", [])).hint or "")
    assert "GET /readyz" in (answer_for(ModelNotReady("loading")).hint or "")
    assert "Redis is back" in (answer_for(StoreUnavailable(OSError("down"))).hint or "")
