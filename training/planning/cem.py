"""Cross-entropy method over real action sequences (PAPER-NOTES §3.5/§3.6).

A diagonal Gaussian over [H, A] (or one [1, A] action repeated when `straight_line`); each iteration
samples `samples` sequences, keeps the previous mean as sample 0, clips to the action box, scores all
of them with one batched rollout, and refits mean/std on the `elites` lowest-cost samples, blended
with the old mean/std by `momentum`. The returned plan is the best sequence seen in any iteration.
"""

from __future__ import annotations

import torch
from torch import Tensor

from training.planning.config import PlannerConfig
from training.planning.search import ContextStep, CostFn, Plan, StepFn, search


def cem_update(
    mean: Tensor, std: Tensor, candidates: Tensor, costs: Tensor, cfg: PlannerConfig
) -> tuple[Tensor, Tensor]:
    """Refit on the elites. mean, std: [R, A]; candidates: [N, R, A]; costs: [N]."""
    k = min(cfg.elites, candidates.shape[0])
    elites = candidates[torch.topk(costs, k, largest=False).indices]  # [K, R, A]
    new_mean = elites.mean(dim=0)
    new_std = elites.std(dim=0, correction=0)  # population std: K=1 gives 0, not NaN
    m = cfg.momentum
    return m * mean + (1 - m) * new_mean, m * std + (1 - m) * new_std


def plan_cem(
    step: StepFn | ContextStep,
    cost_fn: CostFn,
    initial_state: Tensor,
    goal: Tensor,
    cfg: PlannerConfig,
    *,
    deadline_at: float | None = None,
) -> Plan:
    """Plan with CEM. initial_state: [...] (no batch dim); returns a `Plan` with actions [H, A].

    `deadline_at` (a `time.monotonic()` time) tightens `cfg.deadline_s`, e.g. to a request's deadline.
    """
    return search(step, cost_fn, initial_state, goal, cfg, cem_update, deadline_at=deadline_at)
