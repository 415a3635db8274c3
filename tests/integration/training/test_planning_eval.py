"""Offline planning evaluation harness on recorded episodes with a tiny LAM + controller."""

import numpy as np
import pytest
import torch

from tests.conftest import tiny_config_dict
from training.config import config_from_dict
from training.envs.episodes import record_episode
from training.evaluation.planning import (
    evaluate_planner,
    latent_step,
    random_chooser,
    trajectory_metrics,
    world_model_chooser,
    zero_chooser,
)
from training.models import LatentActionModel
from training.models.controller import ControllerConfig, build_controller
from training.planning import preset


def test_metrics_of_the_true_actions_are_zero() -> None:
    nav = record_episode("navigation", 0, steps=8, image_size=32)
    manip = record_episode("manipulation", 0, steps=3, image_size=32)
    assert trajectory_metrics("navigation", nav, nav.actions[:8], 8) == {"ate": 0.0, "rpe": 0.0, "heading": 0.0}
    assert trajectory_metrics("manipulation", manip, manip.actions[:3], 3) == {"delta_xyz": 0.0}


def test_planners_run_on_both_worlds_with_batched_steps() -> None:
    torch.manual_seed(0)
    model = LatentActionModel(config_from_dict(tiny_config_dict("unused", ["unused"])).model).eval()
    for env, cfg in (("manipulation", preset("droid", iterations=2, samples=32, elites=4)), ("navigation", preset("recon", samples=16, elites=4))):
        episodes = [record_episode(env, seed, steps=cfg.horizon, image_size=32) for seed in range(2)]
        action_dim = episodes[0].actions.shape[1]
        controller = build_controller(ControllerConfig(action_dim=action_dim, dim=32, heads=2), 16, 32, 4).eval()
        calls: list[int] = []
        step = latent_step(model, controller)

        def counting(states: torch.Tensor, actions: torch.Tensor, step=step, calls=calls) -> torch.Tensor:
            calls.append(actions.shape[0])
            return step(states, actions)

        lam = evaluate_planner("lam", episodes, world_model_chooser(model, counting, cfg), cfg.horizon)
        assert lam["episodes"] == 2 and all(np.isfinite(v) for k, v in lam.items() if k not in ("planner", "episodes"))
        assert set(calls) == {cfg.samples} and len(calls) == 2 * cfg.horizon * cfg.iterations
        random = evaluate_planner("random", episodes, random_chooser(cfg), cfg.horizon)
        zero = evaluate_planner("zero", episodes, zero_chooser(cfg), cfg.horizon)
        assert random.keys() == zero.keys() == lam.keys()


def test_controller_rollouts_compare_with_idm_rollouts() -> None:
    from training.controller_training import labelled_set
    from training.evaluation.planning import controller_rollouts

    torch.manual_seed(0)
    model = LatentActionModel(config_from_dict(tiny_config_dict("unused", ["unused"])).model).eval()
    data = labelled_set(model, [record_episode("navigation", s, steps=4, image_size=32) for s in range(2)])
    controller = build_controller(ControllerConfig(action_dim=3, dim=32, heads=2), 16, 32, 4).eval()
    out = controller_rollouts(model, controller, data)
    assert out["idm_rollout_l1"] > 0 and out["ratio"] == out["controller_rollout_l1"] / out["idm_rollout_l1"]

    class Oracle(torch.nn.Module):  # returns the IDM's latents: the two rollouts must agree exactly
        def __init__(self) -> None:
            super().__init__()
            self.t = 0

        def forward(self, actions: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
            z = data.latents[:, self.t : self.t + 1]
            self.t += 1
            return z

    assert controller_rollouts(model, Oracle(), data)["ratio"] == pytest.approx(1.0, abs=1e-5)


def test_bad_planning_inputs_name_what_is_wrong() -> None:
    from training.checkpoint import CheckpointError
    from training.evaluation.common import require_controller
    from training.evaluation.planning import encode_observation

    torch.manual_seed(0)
    model = LatentActionModel(config_from_dict(tiny_config_dict("unused", ["unused"])).model).eval()
    with pytest.raises(CheckpointError, match="has no controller: train one with `lawm train controller"):
        require_controller(model)
    controller = build_controller(ControllerConfig(action_dim=3, dim=32, heads=2), 16, 32, 4).eval()
    step = latent_step(model, controller)
    state = encode_observation(model, np.zeros((32, 32, 3), np.uint8))
    assert step(state[None], torch.zeros(1, 3)).shape == state[None].shape
    with pytest.raises(ValueError, match="actions have 4 dims but the controller takes action_dim=3"):
        step(state[None], torch.zeros(1, 4))
    with pytest.raises(ValueError, match="image is 48x32 but the model takes 32x32"):
        encode_observation(model, np.zeros((32, 48, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        encode_observation(model, np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        encode_observation(model, np.zeros((32, 32), np.uint8))


def _trained_like(seed: int = 0) -> tuple[LatentActionModel, torch.nn.Module]:
    """A tiny LAM + controller with every weight perturbed (so the world model is no identity)."""
    torch.manual_seed(seed)
    model = LatentActionModel(config_from_dict(tiny_config_dict("unused", ["unused"])).model).eval()
    controller = build_controller(ControllerConfig(action_dim=3, dim=32, heads=2), 16, 32, 4).eval()
    with torch.no_grad():
        for p in [*model.parameters(), *controller.parameters()]:
            p.add_(torch.randn_like(p) * 0.05)
    return model, controller


@torch.no_grad()
def test_full_context_planning_rollouts_equal_rerunning_the_whole_trajectory() -> None:
    from training.planning import final_states as planner_rollout
    from training.world_model_steps import KeptContextStep

    model, controller = _trained_like()
    wm = model.world_model
    start = torch.nn.functional.layer_norm(torch.randn(16, 32), (32,))  # [N, D]
    actions = torch.rand(5, 2 * wm.cfg.max_steps, 3) - 0.5  # [B, H, A]: past the window, so it slides
    step = latent_step(model, controller, "full")
    assert isinstance(step, KeptContextStep)
    final = planner_rollout(step, start, actions)  # [B, N, D]
    # the reference: re-run the world model on every state so far (the window's last max_steps)
    states, latents = start.expand(5, 1, 16, 32), torch.zeros(5, 0, 16)
    for h in range(actions.shape[1]):
        z = controller(actions[:, h : h + 1], states[:, -1:])  # [B, 1, Z]
        latents = torch.cat([latents, z], dim=1)[:, -wm.cfg.max_steps :]
        states = states[:, -wm.cfg.max_steps :]
        states = torch.cat([states, wm.next_state(states, latents)[:, None]], dim=1)
    assert float((final - states[:, -1]).abs().max()) <= 1e-5 * max(1.0, float(states.abs().max()))
    one_frame = planner_rollout(latent_step(model, controller, "one-frame"), start, actions)
    assert float((one_frame - final).abs().max()) > 1e-3  # the context changes the predictions
    with pytest.raises(ValueError, match="context must be 'full' or 'one-frame'"):
        latent_step(model, controller, "all")


@torch.no_grad()
def test_precision_is_chosen_per_component_by_the_plans_it_gives() -> None:
    import dataclasses

    from training.planning import get_cost, plan
    from training.precision import choose_precisions

    model, controller = _trained_like(1)
    cfg = preset("recon", samples=24, elites=4)
    gen = torch.Generator().manual_seed(0)
    problems = [tuple(torch.nn.functional.layer_norm(torch.randn(2, 16, 32, generator=gen), (32,)).unbind(0)) for _ in range(2)]
    start = problems[0][0]
    actions = torch.rand(6, 3) * 0.5
    for context in ("one-frame", "full"):
        exact = latent_step(model, controller, context)
        low = latent_step(model, controller, context, {"world_model": "bf16", "controller": "bf16"})
        from training.planning import final_states as planner_rollout

        a, b = planner_rollout(exact, start, actions[:, None]), planner_rollout(low, start, actions[:, None])
        assert b.dtype == torch.float32 and 0 < float((a - b).abs().max()) < 0.1  # bf16 ran, and stayed close

    def plan_with(precisions: dict[str, str], problem: tuple[torch.Tensor, torch.Tensor]):
        step = latent_step(model, controller, "full", precisions)
        return plan(step, get_cost(cfg.cost), problem[0], problem[1], dataclasses.replace(cfg, seed=3))

    choice = choose_precisions(plan_with, problems, cfg.action_low, cfg.action_high)
    assert set(choice.precisions) == {"world_model", "controller"} and len(choice.trials) == 2
    for trial in choice.trials:
        assert trial["passed"] == all(c["passed"] for c in trial["checks"])
    kept = [t for t in choice.trials if t["passed"]]
    assert choice.precisions == (kept[-1]["precisions"] if kept else {"world_model": "fp32", "controller": "fp32"})
