"""What the inference layer refuses or fails with, in its own terms: no HTTP here.

Each error carries a `message` (what is wrong) and, where the fix is not obvious, a `hint` (how to
fix it), plus a machine-readable `reason`. `service.errors` is the one place that turns them into
HTTP answers (status, error code, Retry-After); the KServe v2 routes reuse that mapping with their
own body shape.

The batcher's errors are here too, so `service.inference.batching` stays free of torch and HTTP.
"""

from __future__ import annotations


class InferenceError(Exception):
    """Base of the inference layer's known errors."""

    reason: str = "inference_error"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


# ----------------------------------------------------------------------------- the engine
class ModelNotReady(InferenceError):
    """The model is loading, warming, draining or failed; `state` says which."""

    reason = "not_ready"

    def __init__(self, state: str) -> None:
        super().__init__(f"the model is not ready ({state})")
        self.state = state


class MissingComponent(InferenceError):
    """The served model lacks a component a request needs (most often: no controller)."""

    def __init__(self, model: str, version: int, component: str, available: list[str]) -> None:
        self.component = component
        if component == "controller":
            self.reason = "no_controller"
            super().__init__(
                f"model {model} v{version} has no controller, so it cannot take real actions or plan",
                "send latent actions instead, or serve a model with a controller (lawm train controller "
                "--checkpoint CKPT --env navigation|manipulation, then lawm export)",
            )
        else:
            self.reason = "missing_component"
            super().__init__(f"model {model} has no '{component}' component", f"it has: {sorted(available)}")


# ----------------------------------------------------------------------------- the planner
class PlanRejected(InferenceError):
    """A plan request the planner will not run. `reason`: invalid_planner_settings, wrong_action_dim,
    plan_too_large or invalid_plan_inputs."""

    def __init__(self, reason: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.reason = reason


class TooManyPlans(InferenceError):
    """Every planner slot is busy; more plans are refused at once rather than queued unseen."""

    reason = "too_many_plans"

    def __init__(self, active: int) -> None:
        super().__init__(
            f"{active} plans are running, the most this server runs at once",
            "retry after the Retry-After seconds (LAWM_MAX_CONCURRENT_PLANS sets the limit)",
        )


# ----------------------------------------------------------------------------- the batcher
class BatcherError(InferenceError):
    """Base of the batcher's known errors."""

    reason = "batcher_error"


class QueueFull(BatcherError):
    reason = "queue_full"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BacklogTooLong(QueueFull):
    """The work queued ahead of a request would take longer than the batcher's wait budget."""

    reason = "queue_wait"


class DeadlineExceeded(BatcherError):
    reason = "deadline"


class BatcherClosed(BatcherError):
    reason = "shutting_down"


class MalformedInputs(BatcherError):
    """A request's arrays cannot be batched: not a dict of arrays, a scalar, rows that disagree."""

    reason = "invalid_input"


class RequestTooLarge(BatcherError):
    reason = "too_large"
