"""Warm starts: `plan(..., initial_mean=...)` begins the search at a whole given sequence."""

from __future__ import annotations

import pytest
import torch

from training.planning import PlannerConfig, l2_cost, plan


def recording_step(seen: list[torch.Tensor]):  # noqa: ANN201
    """A world model where the state is the sum of the actions so far; records each call's actions."""

    def step(states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        seen.append(actions.clone())
        return states + actions

    return step


def config(**overrides: object) -> PlannerConfig:
    values = {"action_low": (-1.0, -1.0), "action_high": (1.0, 1.0), "horizon": 3, "samples": 8, "elites": 2, "iterations": 1,
                  "init_std": 0.3, "seed": 0}
    return PlannerConfig(**{**values, **overrides})


def test_sample_zero_of_the_first_iteration_is_the_given_sequence() -> None:
    warm = torch.tensor([[0.5, -0.25], [0.1, 0.2], [-0.3, 0.4]])
    seen: list[torch.Tensor] = []
    plan(recording_step(seen), l2_cost, torch.zeros(2), torch.ones(2), config(), initial_mean=warm)
    first_rows = torch.stack([seen[h][0] for h in range(3)])  # candidate 0 at each horizon step
    torch.testing.assert_close(first_rows, warm)

    seen.clear()  # without it the search starts from the box centre
    plan(recording_step(seen), l2_cost, torch.zeros(2), torch.ones(2), config())
    assert torch.equal(torch.stack([seen[h][0] for h in range(3)]), torch.zeros(3, 2))


def test_a_perfect_warm_start_is_kept_as_the_plan() -> None:
    # the goal is reached exactly by the warm sequence; one sample means nothing else is tried
    warm = torch.tensor([[0.5, 0.5], [0.25, 0.0], [0.25, 0.5]])
    result = plan(recording_step([]), l2_cost, torch.zeros(2), warm.sum(0), config(samples=1, elites=1),
                  initial_mean=warm)
    torch.testing.assert_close(result.actions, warm)
    assert result.cost == pytest.approx(0.0, abs=1e-6)


def test_straight_line_plans_take_the_first_row_and_bad_shapes_are_refused() -> None:
    warm = torch.tensor([[0.5, -0.5], [0.0, 0.0], [0.0, 0.0]])
    seen: list[torch.Tensor] = []
    plan(recording_step(seen), l2_cost, torch.zeros(2), torch.ones(2), config(straight_line=True), initial_mean=warm)
    assert all(torch.equal(seen[h][0], warm[0]) for h in range(3))
    with pytest.raises(ValueError, match="initial_mean must be"):
        plan(recording_step([]), l2_cost, torch.zeros(2), torch.ones(2), config(), initial_mean=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="NaN"):
        plan(recording_step([]), l2_cost, torch.zeros(2), torch.ones(2), config(),
             initial_mean=torch.full((3, 2), float("nan")))
