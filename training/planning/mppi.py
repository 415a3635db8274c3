"""Model-predictive path integral planning over real action sequences.

Same sampling as CEM (Gaussian over [H, A] or a repeated [1, A], previous mean kept as sample 0,
clipped to the action box, one batched rollout per iteration), but every sample contributes to the
refit with weight softmax(−cost / temperature): the new mean is the weighted average and, with
`mppi_update_std`, the new std is the weighted standard deviation (otherwise the std stays fixed).
Both are blended with the old values by `momentum`. The plan is the best sequence evaluated.
"""

from __future__ import annotations

import torch
from torch import Tensor

from training.planning.config import PlannerConfig
from training.planning.search import ContextStep, CostFn, Plan, StepFn, search


def mppi_update(
    mean: Tensor, std: Tensor, candidates: Tensor, costs: Tensor, cfg: PlannerConfig
) -> tuple[Tensor, Tensor]:
    """Cost-weighted refit. mean, std: [R, A]; candidates: [N, R, A]; costs: [N] (inf allowed)."""
    finite = torch.isfinite(costs)
    if not bool(finite.any()):
        return mean, std  # nothing usable to learn from this iteration
    # Shift by the minimum so the best sample has weight exp(0): no underflow for large costs.
    shifted = costs - costs[finite].min()
    weights = torch.softmax(-shifted / cfg.temperature, dim=0)[:, None, None]  # [N, 1, 1]; inf -> 0
    new_mean = (weights * candidates).sum(dim=0)  # [R, A]
    # Weighted std, or keep the old one (classic MPPI's fixed exploration noise).
    new_std = (weights * (candidates - new_mean) ** 2).sum(dim=0).sqrt() if cfg.mppi_update_std else std
    m = cfg.momentum
    return m * mean + (1 - m) * new_mean, m * std + (1 - m) * new_std


def plan_mppi(
    step: StepFn | ContextStep,
    cost_fn: CostFn,
    initial_state: Tensor,
    goal: Tensor,
    cfg: PlannerConfig,
    *,
    deadline_at: float | None = None,
) -> Plan:
    """Plan with MPPI. initial_state: [...] (no batch dim); returns a `Plan` with actions [H, A]."""
    return search(step, cost_fn, initial_state, goal, cfg, mppi_update, deadline_at=deadline_at)
