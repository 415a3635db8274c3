"""Backend-agnostic planning over real actions: CEM and MPPI through a world model `step` callable.

The planner never imports the models: callers pass `step(states [B, ...], actions [B, A]) ->
states [B, ...]` (world model with the controller composed in, on torch, onnxruntime or TensorRT),
or a `ContextStep` that keeps each candidate's context (`cfg.context` says which the caller should
build), and `cost_fn(final_states [B, ...], goal [...]) -> [B]`. One batched `step` call per horizon step
carries every candidate of an iteration.

    cfg = preset("droid", seed=3)
    result = plan(step, get_cost(cfg.cost), state, goal_state, cfg)
    result.first_action  # [A]
"""

from __future__ import annotations

from torch import Tensor

from training.planning.cem import cem_update, plan_cem
from training.planning.config import PRESET_FOR_ENV, PRESETS, PlannerConfig, preset
from training.planning.costs import get_cost, l1_cost, l2_cost, pixel_cost
from training.planning.mppi import mppi_update, plan_mppi
from training.planning.search import (
    ContextStep,
    CostFn,
    Plan,
    SearchStopped,
    StepFn,
    check_inputs,
    evaluate,
    final_states,
    search,
)

__all__ = [
    "PRESETS",
    "PRESET_FOR_ENV",
    "ContextStep",
    "CostFn",
    "Plan",
    "PlannerConfig",
    "SearchStopped",
    "StepFn",
    "cem_update",
    "check_inputs",
    "evaluate",
    "final_states",
    "get_cost",
    "l1_cost",
    "l2_cost",
    "mppi_update",
    "pixel_cost",
    "plan",
    "plan_cem",
    "plan_mppi",
    "preset",
]


def plan(
    step: StepFn | ContextStep,
    cost_fn: CostFn,
    initial_state: Tensor,
    goal: Tensor,
    cfg: PlannerConfig,
    *,
    deadline_at: float | None = None,
    initial_mean: Tensor | None = None,
) -> Plan:
    """Plan with the method named by `cfg.method` ("cem" or "mppi"): one shared search loop,
    differing only in how the sampling Gaussian is refit. `initial_mean` `[H, A]` warm-starts it
    (see `search`)."""
    updates = {"cem": cem_update, "mppi": mppi_update}
    if cfg.method not in updates:
        raise ValueError(f"method must be one of {tuple(updates)}, got {cfg.method!r}")
    return search(
        step, cost_fn, initial_state, goal, cfg, updates[cfg.method], deadline_at=deadline_at,
        initial_mean=initial_mean,
    )
