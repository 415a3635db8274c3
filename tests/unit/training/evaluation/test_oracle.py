"""Oracle planners over the true simulators, the uninformed planner rows, the normalised score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.envs.episodes import record_episode
from training.evaluation.oracle import (
    make_simulator,
    normalised_scores,
    oracle_chooser,
    prior_mean_chooser,
    random_line_chooser,
)
from training.evaluation.planning import evaluate_planner, finish_rows, random_chooser
from training.planning import preset


@pytest.mark.parametrize(("env", "steps"), [("navigation", 8), ("manipulation", 3)])
def test_simulators_replay_a_recorded_episode_exactly(env: str, steps: int) -> None:
    episode = record_episode(env, 11, steps=steps, image_size=32)
    sim = make_simulator(episode, 32)
    states = sim.start[None].repeat(2, 1)  # two identical candidates: batched rows stay independent
    for action in episode.actions:
        states = sim.step(states, torch.from_numpy(action)[None].repeat(2, 1))
    frames = sim.render(states)
    assert np.array_equal(frames[0], episode.frames[-1]) and np.array_equal(frames[1], episode.frames[-1])
    pose = episode.poses[-1] if env == "navigation" else episode.poses[-1][:3]
    assert np.allclose(sim.pose(states)[0].numpy(), pose)


def test_normalised_score_arithmetic() -> None:
    rows = [
        {"planner": "oracle", "ate": 0.2},
        {"planner": "random", "ate": 1.0},
        {"planner": "half", "ate": 0.6},
        {"planner": "worse", "ate": 1.4},
        {"planner": "other metric only", "rpe": 3.0},
    ]
    normalised_scores(rows, ["ate"], random="random", oracle="oracle")
    assert [r.get("ate_norm") for r in rows] == [1.0, 0.0, pytest.approx(0.5), pytest.approx(-0.5), None]
    missing = [{"planner": "x", "ate": 1.0}]
    normalised_scores(missing, ["ate"], random="random", oracle="oracle")
    assert "ate_norm" not in missing[0]


def test_pose_oracle_beats_random_and_the_rows_carry_standard_errors() -> None:
    cfg = preset("recon")
    episodes = [record_episode("navigation", 100_000 + i, steps=8, image_size=32) for i in range(6)]
    oracle = evaluate_planner("oracle: pose cost", episodes, oracle_chooser("navigation", cfg, "pose", image_size=32), 8)
    random = evaluate_planner("random actions (uniform per step)", episodes, random_chooser(cfg), 8)
    assert oracle["ate"] < 0.6 * random["ate"] and oracle["rpe"] < random["rpe"]
    rows = finish_rows([oracle, random], "navigation")
    assert list(rows[0])[:5] == ["planner", "episodes", "ate", "ate_se", "ate_norm"]
    assert rows[0]["ate_norm"] == 1.0 and rows[1]["ate_norm"] == 0.0 and rows[0]["ate_se"] > 0


def test_manipulation_pose_oracle_beats_random() -> None:
    cfg = preset("droid", samples=64, elites=8, iterations=4)
    episodes = [record_episode("manipulation", 100_000 + i, steps=3, image_size=32) for i in range(4)]
    oracle = evaluate_planner("oracle", episodes, oracle_chooser("manipulation", cfg, "pose", image_size=32), 3)
    random = evaluate_planner("random", episodes, random_chooser(cfg), 3)
    assert oracle["delta_xyz"] < 0.5 * random["delta_xyz"]


def test_state_oracle_takes_any_encoder() -> None:
    calls: list[tuple[tuple[int, ...], np.dtype]] = []

    def encode(frames: np.ndarray) -> torch.Tensor:  # 4x4-pooled pixels as "states"
        calls.append((frames.shape, frames.dtype))
        x = torch.from_numpy(frames).float().permute(0, 3, 1, 2)
        return torch.nn.functional.avg_pool2d(x, 8)

    cfg = preset("recon", samples=24, elites=4)
    episodes = [record_episode("navigation", 100_000 + i, steps=8, image_size=32) for i in range(3)]
    row = evaluate_planner("state", episodes, oracle_chooser("navigation", cfg, "state", encode, image_size=32), 8)
    assert np.isfinite(row["ate"])
    assert calls[0] == ((1, 32, 32, 3), np.dtype(np.uint8))  # the goal frame first
    assert ((24, 32, 32, 3), np.dtype(np.uint8)) in calls  # then every candidate's final frame, batched
    with pytest.raises(ValueError, match="needs an encode callable"):
        oracle_chooser("navigation", cfg, "state")


def test_uninformed_planners_hold_one_action_within_the_box() -> None:
    cfg = preset("recon")
    episode = record_episode("navigation", 0, steps=8, image_size=32)
    mean = prior_mean_chooser(cfg)(episode, 0)
    assert mean.shape == (8, 3) and np.allclose(mean, np.array(cfg.mean0())[None])
    line = random_line_chooser(cfg, seed=0)
    a, b, again = line(episode, 0), line(episode, 1), line(episode, 0)
    assert np.allclose(a, a[:1]) and not np.allclose(a, b) and np.array_equal(a, again)
    assert (a >= np.array(cfg.action_low)).all() and (a <= np.array(cfg.action_high)).all()
