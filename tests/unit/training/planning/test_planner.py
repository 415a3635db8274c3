"""The backend-agnostic planner: CEM/MPPI convergence, batching contract, deadline, seeds, config."""

from __future__ import annotations

import ast
import dataclasses
import math
import time
from pathlib import Path

import pytest
import torch
from torch import Tensor

from training.planning import (
    PRESETS,
    PlannerConfig,
    evaluate,
    final_states,
    get_cost,
    l1_cost,
    l2_cost,
    pixel_cost,
    plan,
    plan_cem,
    plan_mppi,
    preset,
)

pytestmark = pytest.mark.unit

GOAL = torch.tensor([0.9, -0.6, 0.3, 1.2])  # reachable with 3 steps of |a| <= 1


def additive(states: Tensor, actions: Tensor) -> Tensor:
    """The simplest world: the state is a position, the action a displacement. [B, A], [B, A] -> [B, A]"""
    return states + actions


class Counting:
    """Wraps a step and records the batch size of every call."""

    def __init__(self, step=additive, sleep_s: float = 0.0) -> None:
        self.step, self.sleep_s, self.batches = step, sleep_s, []
        self.actions: list[Tensor] = []

    def __call__(self, states: Tensor, actions: Tensor) -> Tensor:
        self.batches.append(actions.shape[0])
        self.actions.append(actions.clone())
        assert states.shape[0] == actions.shape[0]
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return self.step(states, actions)


def cfg(**kw) -> PlannerConfig:
    base = {
        "action_low": (-1.0,) * 4,
        "action_high": (1.0,) * 4,
        "horizon": 3,
        "samples": 200,
        "elites": 10,
        "iterations": 12,
        "init_std": 0.6,
    }
    base.update(kw)
    return PlannerConfig(**base)


# --- convergence -------------------------------------------------------------------------------


def test_cem_reaches_goal_of_quadratic() -> None:
    result = plan_cem(additive, l2_cost, torch.zeros(4), GOAL, cfg())
    assert result.actions.shape == (3, 4) and result.mean.shape == (3, 4)
    assert torch.allclose(result.actions.sum(0), GOAL, atol=0.05)
    assert result.cost < 0.05
    assert result.cost == pytest.approx(
        float(l2_cost(result.actions.sum(0, keepdim=True), GOAL)[0]), abs=1e-5
    )
    assert result.iterations_run == 12 and result.evaluations == 12 * 200 and not result.deadline_hit
    assert len(result.history) == 12 and min(result.history) == pytest.approx(result.cost)
    assert result.history[-1] < result.history[0]  # it improved
    assert set(result.timings) == {"total", "step", "cost"}
    assert result.timings["total"] >= result.timings["step"] >= 0.0


def test_cem_saturates_at_bound_when_goal_unreachable() -> None:
    goal = torch.tensor([1.0, -1.0, 0.5, 0.05])
    c = cfg(action_low=(-0.1,) * 4, action_high=(0.1,) * 4, init_std=0.2)
    result = plan_cem(additive, l2_cost, torch.zeros(4), goal, c)
    assert torch.all(result.actions >= -0.1) and torch.all(result.actions <= 0.1)
    # The three unreachable dims push every step onto the bound; the reachable one is on target.
    assert torch.allclose(result.actions[:, :3], torch.tensor([0.1, -0.1, 0.1]).expand(3, 3), atol=1e-3)
    assert result.actions[:, 3].sum().item() == pytest.approx(0.05, abs=0.02)


def test_mppi_reaches_goal_of_quadratic() -> None:
    c = cfg(method="mppi", temperature=0.05, iterations=15, momentum=0.2)
    result = plan(additive, l2_cost, torch.zeros(4), GOAL, c)
    assert torch.allclose(result.actions.sum(0), GOAL, atol=0.1)
    assert torch.allclose(result.mean.sum(0), GOAL, atol=0.1)
    assert result.cost < 0.1


def test_mppi_fixed_std_also_improves() -> None:
    c = cfg(method="mppi", temperature=0.05, mppi_update_std=False, init_std=0.2)
    result = plan_mppi(additive, l2_cost, torch.zeros(4), GOAL, c)
    assert result.cost < 0.1 and result.history[-1] < result.history[0]


def test_straight_line_repeats_one_action() -> None:
    step = Counting()
    c = cfg(straight_line=True, horizon=5, samples=64, iterations=3)
    result = plan(step, l2_cost, torch.zeros(4), GOAL, c)
    assert result.actions.shape == (5, 4)
    assert torch.equal(result.actions, result.actions[:1].expand(5, 4))
    assert torch.equal(result.mean, result.mean[:1].expand(5, 4))
    # Every candidate in the rollout is straight too: each horizon step sees the same actions.
    for it in range(3):
        calls = step.actions[it * 5 : (it + 1) * 5]
        assert all(torch.equal(calls[0], a) for a in calls[1:])
    assert torch.allclose(result.actions.sum(0), GOAL, atol=0.5)


# --- the batching contract ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["cem", "mppi"])
@pytest.mark.parametrize("straight", [False, True])
def test_one_batched_step_call_per_horizon_step(method: str, straight: bool) -> None:
    step = Counting()
    c = cfg(method=method, horizon=4, samples=37, elites=5, iterations=3, straight_line=straight)
    result = plan(step, l2_cost, torch.zeros(4), GOAL, c)
    assert step.batches == [37] * (4 * 3)
    assert result.evaluations == 37 * 3


def test_batched_and_per_sample_costs_agree() -> None:
    torch.manual_seed(0)
    w, u = torch.randn(8, 8) * 0.3, torch.randn(3, 8)

    def step(states: Tensor, actions: Tensor) -> Tensor:  # [B, T, N, D], [B, A] -> [B, T, N, D]
        return torch.tanh(states @ w + (actions @ u)[:, None, None, :])

    state, goal = torch.randn(2, 5, 8), torch.randn(2, 5, 8)  # a context-like [T, N, D] state
    actions = torch.randn(9, 4, 3)  # [B, H, A]
    for cost_fn in (l1_cost, l2_cost):
        batched = evaluate(step, cost_fn, state, goal, actions)
        single = torch.cat([evaluate(step, cost_fn, state, goal, actions[i : i + 1]) for i in range(9)])
        assert batched.shape == (9,)
        assert torch.allclose(batched, single, atol=1e-6)
        assert batched.std() > 0  # different candidates, different costs


def test_rollout_expands_state_and_returns_final() -> None:
    step = Counting()
    actions = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    final = final_states(step, torch.ones(4), actions)
    assert final.shape == (2, 4) and step.batches == [2, 2, 2]
    assert torch.equal(final, 1 + actions.sum(1))
    with pytest.raises(RuntimeError, match="batch"):
        final_states(lambda s, a: s[:1], torch.ones(4), actions)


def test_plan_is_best_over_all_iterations_not_the_last() -> None:
    calls = []

    def worsening(states: Tensor, goal: Tensor) -> Tensor:  # later iterations all score worse
        calls.append(None)
        return l2_cost(states, goal) + 10.0 * (len(calls) - 1)

    step = Counting()
    result = plan(step, worsening, torch.zeros(4), GOAL, cfg(iterations=3, samples=16))
    assert result.history[1] > result.history[0] and result.cost == result.history[0]
    first = torch.stack(step.actions[:3], dim=1)  # iteration 0's candidates [N, H, A]
    best0 = first[int(torch.argmin(l2_cost(first.sum(1), GOAL)))]
    assert torch.equal(result.actions, best0)


def test_previous_mean_is_sample_zero() -> None:
    step = Counting()
    mean0 = torch.tensor([0.1, -0.2, 0.3, 0.0])
    result = plan(
        step,
        l2_cost,
        torch.zeros(4),
        GOAL,
        cfg(iterations=2, samples=8, elites=3, init_mean=tuple(mean0.tolist())),
    )
    assert all(torch.equal(a[0], mean0) for a in step.actions[:3])  # iteration 0, every horizon step
    assert not torch.equal(step.actions[0][1], mean0)  # the others are samples
    assert not torch.equal(step.actions[3][0], mean0)  # iteration 1 starts from the refit mean
    assert result.iterations_run == 2


def test_nonfinite_costs_never_win() -> None:
    def nan_for_positive(states: Tensor, goal: Tensor) -> Tensor:
        c = l2_cost(states, goal)
        return torch.where(states[:, 0] > 0, torch.full_like(c, math.nan), c)

    result = plan(additive, nan_for_positive, torch.zeros(4), GOAL, cfg(iterations=3))
    assert math.isfinite(result.cost) and result.actions.sum(0)[0] <= 0


# --- deadline ----------------------------------------------------------------------------------


def test_deadline_stops_early_with_a_finite_plan() -> None:
    step = Counting(sleep_s=0.05)
    c = cfg(horizon=1, samples=16, iterations=15, deadline_s=0.08)
    result = plan(step, l2_cost, torch.zeros(4), GOAL, c)
    assert result.deadline_hit
    assert 1 <= result.iterations_run < 15
    assert len(step.batches) == result.iterations_run  # horizon 1: one call per iteration
    assert torch.isfinite(result.actions).all() and math.isfinite(result.cost)


def test_deadline_already_past_returns_initial_mean() -> None:
    step = Counting()
    c = cfg(deadline_s=0.0, init_mean=(0.1, 0.2, 0.3, 0.4))
    result = plan(step, l2_cost, torch.zeros(4), GOAL, c)
    assert result.deadline_hit and result.iterations_run == 0 and result.evaluations == 0
    assert step.batches == [] and result.cost == math.inf
    assert torch.equal(result.actions, torch.tensor([[0.1, 0.2, 0.3, 0.4]]).expand(3, 4))
    # An absolute deadline in the past does the same even without deadline_s.
    late = plan(step, l2_cost, torch.zeros(4), GOAL, cfg(), deadline_at=time.monotonic() - 1.0)
    assert late.iterations_run == 0 and late.deadline_hit


def test_generous_deadline_runs_every_iteration() -> None:
    result = plan(additive, l2_cost, torch.zeros(4), GOAL, cfg(iterations=4, deadline_s=60.0))
    assert result.iterations_run == 4 and not result.deadline_hit


# --- seeds -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["cem", "mppi"])
def test_same_seed_same_plan_different_seed_different_samples(method: str) -> None:
    runs = []
    for seed in (7, 7, 8):
        step = Counting()
        result = plan(
            step, l2_cost, torch.zeros(4), GOAL, cfg(method=method, seed=seed, iterations=3, samples=32)
        )
        runs.append((result, torch.stack(step.actions)))
    (a, sa), (b, sb), (_, sc) = runs
    assert torch.equal(a.actions, b.actions) and torch.equal(a.mean, b.mean) and a.history == b.history
    assert torch.equal(sa, sb)
    assert not torch.equal(sa, sc)


# --- costs -------------------------------------------------------------------------------------


def test_costs_values() -> None:
    states = torch.tensor([[[3.0, 0.0], [0.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])  # [2, 2, 2]
    goal = torch.zeros(2, 2)
    assert torch.allclose(l2_cost(states, goal), torch.tensor([5.0, 0.0]))
    assert torch.allclose(l1_cost(states, goal), torch.tensor([7.0 / 4, 0.0]))
    assert get_cost("l1") is l1_cost and get_cost("l2") is l2_cost
    with pytest.raises(ValueError, match="decode"):
        get_cost("pixel")
    with pytest.raises(ValueError, match="cost"):
        get_cost("lpips")


def test_pixel_cost_decodes_and_caches_goal() -> None:
    calls: list[int] = []

    def decode(states: Tensor) -> Tensor:  # [B, D] -> [B, 1, 2, 2] "pixels"
        calls.append(states.shape[0])
        return (2 * states).reshape(-1, 1, 2, 2)

    cost = get_cost("pixel", decode=decode)
    states, goal = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]), torch.zeros(4)
    assert torch.allclose(cost(states, goal), torch.tensor([2.0, 0.0]))
    assert torch.allclose(cost(states, goal), torch.tensor([2.0, 0.0]))
    assert calls == [1, 2, 2]  # the goal was decoded once
    assert torch.allclose(pixel_cost(decode)(states, torch.ones(4)), torch.tensor([0.0, 2.0]))


# --- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"horizon": 0}, "horizon"),
        ({"horizon": 65}, "horizon"),
        ({"samples": 5000}, "samples"),
        ({"samples": 10, "elites": 11}, "elites"),
        ({"iterations": 0}, "iterations"),
        ({"init_std": 0.0}, "init_std"),
        ({"init_std": (1.0, 1.0)}, "init_std"),
        ({"action_low": (math.nan, -1.0, -1.0, -1.0)}, "action_low"),
        ({"action_high": (1.0, math.inf, 1.0, 1.0)}, "action_high"),
        ({"action_low": (1.0, -1.0, -1.0, -1.0)}, "action_low"),
        ({"action_low": (-1.0, -1.0)}, "same length"),
        ({"momentum": 1.5}, "momentum"),
        ({"temperature": 0.0}, "temperature"),
        ({"deadline_s": -1.0}, "deadline_s"),
        ({"method": "adam"}, "method"),
        ({"cost": "lpips"}, "cost"),
        ({"init_mean": 2.0}, "init_mean"),
        ({"horizon": True}, "horizon"),
    ],
)
def test_validation_names_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        cfg(**overrides)


def test_presets() -> None:
    droid, recon = PRESETS["droid"], PRESETS["recon"]
    assert (droid.horizon, droid.samples, droid.elites, droid.iterations) == (3, 300, 10, 15)
    assert droid.action_dim == 4 and droid.action_high == (0.1, 0.1, 0.1, 0.75) and droid.cost == "l2"
    assert (recon.horizon, recon.samples, recon.elites, recon.iterations) == (8, 120, 5, 1)
    assert recon.straight_line and recon.action_dim == 3
    tweaked = preset("droid", samples=64, seed=5)
    assert tweaked.samples == 64 and tweaked.seed == 5 and droid.samples == 300
    moved = preset("droid", action_low=(-1.0, -1.0), action_high=(1.0, 1.0))
    assert moved.action_dim == 2 and moved.mean0() == (0.0, 0.0)
    with pytest.raises(ValueError, match="elites"):
        preset("recon", samples=4)
    with pytest.raises(ValueError, match="preset"):
        preset("atari")
    with pytest.raises(ValueError, match="unknown"):
        preset("droid", horizn=4)
    # A preset plans end to end (small override to stay fast).
    result = plan(
        additive, l2_cost, torch.zeros(3), torch.tensor([1.0, 0.0, 0.0]), preset("recon", samples=16)
    )
    assert result.actions.shape == (8, 3) and result.iterations_run == 1
    assert torch.all(result.actions[:, 0] >= 0.0) and torch.all(result.actions[:, 0] <= 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        droid.horizon = 4  # type: ignore[misc]


def test_planner_never_imports_models() -> None:
    package = Path(__file__).resolve().parents[4] / "training" / "planning"
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.startswith("training.models") for n in names), path


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "goal", "message"),
    [
        (torch.zeros(4), torch.tensor([0.0, math.nan, 0.0, 0.0]), "goal holds NaN"),
        (torch.tensor([math.inf, 0.0, 0.0, 0.0]), GOAL, "initial_state holds NaN or infinite"),
        (torch.zeros(4), torch.zeros(5), r"goal has shape \(5,\) but the observation's state has shape \(4,\)"),
        (torch.zeros(0), torch.zeros(0), "initial_state is empty"),
    ],
)
def test_bad_states_are_refused_before_any_step(state: Tensor, goal: Tensor, message: str) -> None:
    step = Counting()
    with pytest.raises(ValueError, match=message):
        plan(step, l2_cost, state, goal, cfg(iterations=2))
    assert step.batches == []  # nothing reached the world model


# --- context-keeping steps -----------------------------------------------------------------------


class Momentum:
    """A world whose next state depends on the previous one too (not Markov in the state alone):
    s' = s + a + 0.5 (s - s_prev). A `ContextStep`: the carry is (s_prev, s)."""

    def __init__(self) -> None:
        self.begun: list[int] = []
        self.advanced: list[int] = []

    def begin(self, state: Tensor, batch: int) -> tuple[Tensor, Tensor]:
        self.begun.append(batch)
        s = state.expand(batch, *state.shape)
        return s, s

    def advance(self, carry: tuple[Tensor, Tensor], actions: Tensor) -> tuple[tuple[Tensor, Tensor], Tensor]:
        self.advanced.append(actions.shape[0])
        prev, s = carry
        nxt = s + actions + 0.5 * (s - prev)
        return (s, nxt), nxt


def test_a_context_step_carries_its_context_through_the_rollout() -> None:
    from training.planning import ContextStep

    world = Momentum()
    assert isinstance(world, ContextStep) and not isinstance(additive, ContextStep)
    actions = torch.ones(2, 3, 4)
    final = final_states(world, torch.zeros(4), actions, timings=(timings := {}))
    # velocities 1, 1.5, 1.75: positions 1, 2.5, 4.25 — the Markov view of the same world gives 3
    assert torch.allclose(final, torch.full((2, 4), 4.25))
    assert world.begun == [2] and world.advanced == [2, 2, 2] and timings["step"] > 0


def test_cem_plans_through_a_context_step_in_one_batched_call_per_horizon_step() -> None:
    world = Momentum()
    config = cfg(iterations=8)
    result = plan_cem(world, l2_cost, torch.zeros(4), GOAL, config)
    assert world.begun == [config.samples] * config.iterations
    assert world.advanced == [config.samples] * config.iterations * config.horizon
    assert result.cost < 0.05  # CEM finds the sequence in the momentum world too
    final = final_states(Momentum(), torch.zeros(4), result.actions[None])[0]
    assert float(l2_cost(final[None], GOAL)[0]) == pytest.approx(result.cost, abs=1e-5)


def test_context_is_validated_and_kept_by_presets() -> None:
    assert preset("recon").context == "one-frame" and preset("recon", context="full").context == "full"
    with pytest.raises(ValueError, match="context must be one of"):
        cfg(context="two-frames")
