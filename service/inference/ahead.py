"""Planning ahead in a plan session: the next step's plan, searched while the robot still moves.

After a step answers, the robot spends the control period executing `actions_now`. A session that
asks for it (`plan_ahead`) uses that time: the world model predicts the state those actions lead
to, and the warm search runs from that predicted state at once (below session steps in the
batchers: it is speculation). When the next real frame arrives, its state is compared with the
prediction: within `ahead_tolerance` (relative L2 distance of the token grids) the plan made ahead
is the answer, at the cost of one encode; otherwise the step searches afresh from the real state,
as without planning ahead. Either way the next plan-ahead starts from the real state, so a
prediction's error never accumulates past one step.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from service.inference.engine import Engine
from service.inference.planner import PlanSlots, finite_or_none, run_plan
from service.inference.queue import Priority
from service.inference.rollout import rollout_actions
from training.planning import PlannerConfig


@dataclass
class AheadPlan:
    predicted: np.ndarray  # [N, D] the state expected after the executed actions
    actions: np.ndarray  # [H, A] the plan searched from it
    cost: float | None
    iterations: int
    evaluations: int
    seconds: float  # the speculative work's wall time (predict + search)


def relative_error(real: np.ndarray, predicted: np.ndarray) -> float:
    """‖real − predicted‖ / ‖real‖ over the whole token grid (0: the prediction was exact)."""
    return float(np.linalg.norm(real - predicted) / max(float(np.linalg.norm(real)), 1e-12))


async def plan_ahead(
    engine: Engine, slots: PlanSlots, cfg: PlannerConfig, state: np.ndarray, goal: np.ndarray,
    executed: np.ndarray, warm_start: np.ndarray,
) -> AheadPlan:
    """Predict where `executed` `[E, A]` takes `state` `[N, D]`, then search from there, warm-started
    from `warm_start` `[H, A]` (the current plan shifted by the executed actions)."""
    t0 = time.perf_counter()
    predicted = (await rollout_actions(engine, state, executed, Priority.PLAN, None))[0][-1]  # [N, D]
    result, _ = await run_plan(engine, slots, cfg, predicted, goal, None, None, initial_mean=warm_start,
                                   priority=Priority.PLAN)
    return AheadPlan(predicted, result.actions.numpy(), finite_or_none(result.cost), result.iterations_run,
                     result.evaluations, time.perf_counter() - t0)


async def ready_ahead(task: asyncio.Task[AheadPlan] | None, deadline: float | None) -> AheadPlan | None:
    """The plan made ahead, waiting for it until `deadline` (`time.monotonic()`; None: as long as it
    takes); None when there is none, it failed, or it is not done in time (it is then cancelled)."""
    if task is None:
        return None
    if not task.done():
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        await asyncio.wait({task}, timeout=timeout)
    if not task.done():
        task.cancel()
        return None
    if task.cancelled() or task.exception() is not None:
        return None
    return task.result()
