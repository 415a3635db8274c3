"""The action-labelled world model as `lawm bench robot`'s in-process policy, on a tiny model: it
trains, plans receding-horizon (cold, then warm from the shifted plan), and the bench reports it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.bench.labelled import LabelledPolicy
from service.bench.robot import RobotBench, episode_world, run
from tests.unit.exporters.tiny import tiny_checkpoint

TINY = {"samples": 8, "elites": 2, "horizon": 3, "iterations": 1}


def test_labelled_policy_plans_cold_then_warm(tmp_path: Path) -> None:
    policy = LabelledPolicy(tiny_checkpoint(tmp_path / "ckpt"), overrides=TINY, train_episodes=2, steps=2)
    assert policy.warm.samples == 2 and policy.cold.samples == 8  # a quarter, at least the elites
    size = policy.model.cfg.encoder.image_size
    env, goal, _ = episode_world(RobotBench(image_size=size), 0)
    policy.start(goal)
    first = policy.act(env.render())
    assert first.shape == (3,) and policy.steps == 1 and policy.previous is not None
    low, high = np.asarray(policy.cold.action_low), np.asarray(policy.cold.action_high)
    assert np.all(first >= low - 1e-6) and np.all(first <= high + 1e-6)
    policy.act(env.render())
    assert policy.steps == 2
    policy.start(goal)  # a new episode forgets the last plan
    assert policy.previous is None and policy.steps == 0


def test_bench_runs_the_labelled_policy_without_a_server(tmp_path: Path) -> None:
    policy = LabelledPolicy(tiny_checkpoint(tmp_path / "ckpt"), overrides=TINY, train_episodes=2, steps=2)
    bench = RobotBench(episodes=2, steps=2, goal_steps=2, image_size=policy.model.cfg.encoder.image_size,
                       policies=("labelled", "random"))
    result = run(bench, None, labelled=policy)
    labelled, random = result["rows"]
    assert labelled["policy"].startswith("labelled") and random["policy"] == "random"
    assert labelled["episodes"] == 2 and labelled["final_distance_m"] >= 0 and labelled["step_p50_ms"] is None
    assert result["verdict"] is None  # no served model in this run
    with pytest.raises(ValueError, match="LabelledPolicy"):
        run(bench, None)
