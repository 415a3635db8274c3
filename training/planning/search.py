"""The search CEM and MPPI share: candidate action sequences rolled through a world model, the
sampling loop, and its result.

The planner sees the world model only as `step(states [B, ...], actions [B, A]) -> states [B, ...]`
(the controller that maps real actions to latent actions is composed into `step` by the caller), and
a cost `cost_fn(final_states [B, ...], goal [...]) -> [B]`. A step that keeps each candidate's
context (every earlier predicted state, as the world model was trained block-causally) is a
`ContextStep` instead: `begin` makes the per-rollout carry (e.g. a KV cache), `advance` moves every
candidate one step; the planner treats the carry as opaque. Each horizon step is ONE batched call
holding every candidate of the iteration, so a batching runtime (torch, onnxruntime, TensorRT) sees
`samples` rows at once and the planner issues exactly `horizon` calls per iteration.

`search` is the loop CEM and MPPI share: sample a Gaussian over [H, A] (or [1, A] repeated for
straight-line plans), keep the previous mean as sample 0, clip to the action box, evaluate, let the
method refit the Gaussian, track the best sequence seen, and stop early at the deadline.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from training.planning.config import PlannerConfig

StepFn = Callable[[Tensor, Tensor], Tensor]


class SearchStopped(Exception):
    """Raised by a step or cost function to end the search now (e.g. a serving deadline passed
    while one of its calls waited): the iteration in progress is dropped and the best plan of the
    iterations that finished is returned with `deadline_hit=True` (cost inf if none finished)."""


@runtime_checkable
class ContextStep(Protocol):
    """A step that carries each candidate's rollout context between calls (a KV cache, the states
    so far): predictions then depend on the whole trajectory, not only the current state."""

    def begin(self, state: Tensor, batch: int) -> Any:
        """The carry of `batch` rollouts that all start at `state` `[...]` (no batch dim)."""
        ...

    def advance(self, carry: Any, actions: Tensor) -> tuple[Any, Tensor]:
        """Apply `actions` `[B, A]`: (the new carry, the next states `[B, ...]`)."""
        ...


CostFn = Callable[[Tensor, Tensor], Tensor]
# (mean [R, A], std [R, A], candidates [N, R, A], costs [N], cfg) -> (new mean, new std)
UpdateFn = Callable[[Tensor, Tensor, Tensor, Tensor, PlannerConfig], tuple[Tensor, Tensor]]

ACTION_DTYPE = torch.float32


@dataclass
class Plan:
    """The result of one planning call.

    `actions` is the best-scoring sequence evaluated over all iterations (execute `actions[0]`, or
    more for open-loop use); `mean` is the final Gaussian mean. `cost` is the evaluated cost of
    `actions` (inf when nothing was evaluated). `evaluations` counts candidate rollouts. `timings`
    holds seconds: total, step (inside `step` calls), cost (inside `cost_fn` calls); on CUDA these are
    host-side times. `deadline_hit` is True when fewer than `cfg.iterations` ran because of the
    deadline. `history[i]` is the lowest cost among iteration i's candidates.
    """

    actions: Tensor  # [H, A]
    mean: Tensor  # [H, A]
    cost: float
    iterations_run: int
    evaluations: int
    timings: dict[str, float]
    deadline_hit: bool
    history: list[float] = field(default_factory=list)

    @property
    def first_action(self) -> Tensor:
        """The action to execute now (receding horizon). [A]"""
        return self.actions[0]


def _add_time(timings: dict[str, float] | None, key: str, seconds: float) -> None:
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + seconds


def final_states(
    step: StepFn | ContextStep, state: Tensor, actions: Tensor, *, timings: dict[str, float] | None = None
) -> Tensor:
    """Unroll `step` from one initial state under B action sequences; returns the final states.

    state: [...] (no batch dim), actions: [B, H, A] -> final states [B, ...]. The initial state is
    broadcast to the batch as an expanded view (no copy): `step` must not write into its input.
    Seconds spent inside `step` (`begin` and `advance` for a `ContextStep`) are added to
    `timings["step"]` when given.
    """
    if actions.ndim != 3:
        raise ValueError(f"actions must be [B, H, A], got shape {tuple(actions.shape)}")
    batch, horizon, _ = actions.shape
    states = state.unsqueeze(0).expand(batch, *state.shape)  # [B, ...]
    keeps_context = isinstance(step, ContextStep)
    if keeps_context:
        t0 = time.perf_counter()
        carry = step.begin(state, batch)  # type: ignore[union-attr]
        _add_time(timings, "step", time.perf_counter() - t0)
    for h in range(horizon):
        a = actions[:, h].contiguous()  # [B, A]; contiguous for runtimes that take raw buffers
        t0 = time.perf_counter()
        if keeps_context:
            carry, states = step.advance(carry, a)  # type: ignore[union-attr]
        else:
            states = step(states, a)  # type: ignore[operator]
        _add_time(timings, "step", time.perf_counter() - t0)
        if states.shape[0] != batch:
            raise RuntimeError(
                f"step returned batch {states.shape[0]} for {batch} actions at horizon step {h}"
            )
    return states


def evaluate(
    step: StepFn | ContextStep,
    cost_fn: CostFn,
    state: Tensor,
    goal: Tensor,
    actions: Tensor,
    *,
    timings: dict[str, float] | None = None,
) -> Tensor:
    """Costs of B action sequences: rollout, then one batched cost call. [B, H, A] -> [B] float32.

    Non-finite costs (a diverging model) become +inf so they can never be chosen or become elites.
    """
    final = final_states(step, state, actions, timings=timings)
    t0 = time.perf_counter()
    costs = cost_fn(final, goal)
    _add_time(timings, "cost", time.perf_counter() - t0)
    if costs.shape != (actions.shape[0],):
        raise RuntimeError(f"cost_fn must return [B] = [{actions.shape[0]}], got shape {tuple(costs.shape)}")
    costs = costs.detach().to(torch.float32)
    return torch.where(torch.isfinite(costs), costs, torch.full_like(costs, math.inf))


def _deadline(cfg: PlannerConfig, start: float, deadline_at: float | None) -> float | None:
    """The earlier of `start + cfg.deadline_s` and `deadline_at` (both `time.monotonic()` seconds)."""
    ends = [
        d for d in (None if cfg.deadline_s is None else start + cfg.deadline_s, deadline_at) if d is not None
    ]
    return min(ends) if ends else None


def check_inputs(initial_state: Tensor, goal: Tensor) -> None:
    """Reject states the planner cannot use, naming the argument: a goal of another shape than the
    observation (e.g. encoded from an image of another size) or non-finite values (NaN, inf)."""
    for name, value in (("initial_state", initial_state), ("goal", goal)):
        if not isinstance(value, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.numel() == 0:
            raise ValueError(f"{name} is empty (shape {tuple(value.shape)})")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} holds NaN or infinite values; pass finite states")
    if goal.shape != initial_state.shape:
        raise ValueError(
            f"goal has shape {tuple(goal.shape)} but the observation's state has shape "
            f"{tuple(initial_state.shape)}: encode the goal with the same model and image size"
        )


@torch.no_grad()
def search(
    step: StepFn | ContextStep,
    cost_fn: CostFn,
    initial_state: Tensor,
    goal: Tensor,
    cfg: PlannerConfig,
    update: UpdateFn,
    *,
    deadline_at: float | None = None,
    initial_mean: Tensor | None = None,
) -> Plan:
    """The sampling loop shared by CEM and MPPI; `update` refits the Gaussian from scored samples.

    `initial_mean` `[H, A]` starts the Gaussian at a whole sequence instead of `cfg.mean0()` at every
    step: a receding-horizon controller passes its previous plan shifted by one step (warm start),
    which is then sample 0 of the first iteration. For straight-line plans its first row is used.

    Deadline: before each iteration after the first, stop if the previous iteration's duration would
    carry past the deadline (so a control loop gets its answer on time rather than one iteration
    late); the first iteration is skipped only when the deadline has already passed, in which case
    the plan is the initial mean with cost inf.
    """
    check_inputs(initial_state, goal)
    t_start = time.perf_counter()
    start = time.monotonic()
    deadline = _deadline(cfg, start, deadline_at)
    device = initial_state.device
    n, horizon, dims = cfg.samples, cfg.horizon, cfg.action_dim
    rows = 1 if cfg.straight_line else horizon  # straight line: one action repeated over the horizon

    low = torch.tensor(cfg.action_low, dtype=ACTION_DTYPE, device=device)  # [A]
    high = torch.tensor(cfg.action_high, dtype=ACTION_DTYPE, device=device)  # [A]
    if initial_mean is None:
        mean = torch.tensor(cfg.mean0(), dtype=ACTION_DTYPE, device=device).expand(rows, dims).clone()  # [R, A]
    else:
        if tuple(initial_mean.shape) != (horizon, dims):
            raise ValueError(f"initial_mean must be [horizon, action_dim] = [{horizon}, {dims}], "
                             f"got shape {tuple(initial_mean.shape)}")
        if not bool(torch.isfinite(initial_mean).all()):
            raise ValueError("initial_mean holds NaN or infinite values")
        mean = initial_mean[:rows].to(device=device, dtype=ACTION_DTYPE).clone()  # [R, A]
    std = torch.tensor(cfg.init_std, dtype=ACTION_DTYPE, device=device).expand(rows, dims).clone()  # [R, A]
    # Noise is drawn on a CPU generator and moved: the same seed gives the same plan on any device.
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)

    def full(seq: Tensor) -> Tensor:  # [R, A] -> [H, A]
        return seq.expand(horizon, dims).clone()

    best = full(mean.clamp(low, high))
    best_cost = math.inf
    history: list[float] = []
    timings = {"total": 0.0, "step": 0.0, "cost": 0.0}
    iterations_run = 0
    deadline_hit = False
    last_duration = 0.0

    for it in range(cfg.iterations):
        if deadline is not None:
            now = time.monotonic()
            if now >= deadline or (it > 0 and now + last_duration > deadline):
                deadline_hit = True
                break
        t_iter = time.monotonic()
        noise = torch.randn((n, rows, dims), generator=gen, dtype=ACTION_DTYPE).to(device)  # [N, R, A]
        candidates = mean + std * noise  # [N, R, A]
        candidates[0] = mean  # keep the previous mean as a candidate (as jepa-wms does)
        candidates = candidates.clamp(low, high)
        sequences = candidates.expand(n, horizon, dims) if cfg.straight_line else candidates  # [N, H, A]

        try:
            costs = evaluate(step, cost_fn, initial_state, goal, sequences, timings=timings)  # [N]
        except SearchStopped:
            deadline_hit = True
            break
        i = int(torch.argmin(costs))
        cost_i = float(costs[i])
        history.append(cost_i)
        if cost_i < best_cost:
            best_cost, best = cost_i, sequences[i].clone()  # [H, A]

        mean, std = update(mean, std, candidates, costs, cfg)
        iterations_run += 1
        last_duration = time.monotonic() - t_iter

    timings["total"] = time.perf_counter() - t_start
    return Plan(
        actions=best,
        mean=full(mean),
        cost=best_cost,
        iterations_run=iterations_run,
        evaluations=iterations_run * n,
        timings=timings,
        deadline_hit=deadline_hit,
        history=history,
    )
