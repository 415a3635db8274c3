"""Offline planning evaluation on recorded episodes (PAPER-NOTES §3.5 DROID, §3.6 RECON/NWM).

Each episode gives a start observation, a goal observation H actions later and the true
actions in between. A planner searches real actions, rolled through `step` (the controller
mapping a real action to a latent, then one world-model step), for the final state closest to
the goal's encoding. Metrics compare the planned actions with the true ones: Δxyz for the
manipulation world (DROID), ATE/RPE of the integrated trajectory for navigation (RECON).
Baselines: a random planner (uniform in the action bounds) and the zero action.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from training.controller_training import duplicate_frames
from training.envs.episodes import Episode
from training.envs.metrics import ate, delta_xyz, poses_from_actions, rpe
from training.models.lam import LatentActionModel
from training.planning import PlannerConfig, get_cost, plan

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def latent_step(model: LatentActionModel, controller: torch.nn.Module) -> Step:
    """step(states [B, N, D], actions [B, A]) -> next states [B, N, D] through controller + world model."""

    @torch.no_grad()
    def step(states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        latents = controller(actions[:, None], states[:, None])  # [B, 1, Z]
        return model.world_model.step(states[:, None], latents)  # [B, N, D]

    return step


@torch.no_grad()
def encode_observation(model: LatentActionModel, frame: np.ndarray) -> torch.Tensor:
    """One uint8 frame `[H, W, 3]` -> its state `[N, D]` (the frame duplicated into a tubelet)."""
    return model.encode(duplicate_frames(frame[None])[None])[0, 0]


@dataclass
class EpisodeResult:
    planned: np.ndarray  # [H, A]
    truth: np.ndarray  # [H, A]
    metrics: dict[str, float] = field(default_factory=dict)


def trajectory_metrics(env: str, episode: Episode, planned: np.ndarray, horizon: int) -> dict[str, float]:
    truth = episode.actions[:horizon]
    if env == "manipulation":
        return {"delta_xyz": delta_xyz(planned, truth)}
    start = episode.action_poses[0]
    predicted_poses = poses_from_actions(start, planned)
    true_poses = poses_from_actions(start, truth)
    return {"ate": ate(predicted_poses, true_poses), "rpe": rpe(predicted_poses, true_poses)}


def evaluate_planner(
    name: str,
    episodes: list[Episode],
    choose: Callable[[Episode, int], np.ndarray],
    horizon: int,
) -> dict[str, Any]:
    """Run `choose(episode, index) -> planned actions [H, A]` on every episode; average the metrics."""
    per_episode = []
    for i, episode in enumerate(episodes):
        planned = choose(episode, i)
        per_episode.append(trajectory_metrics(episode.env, episode, planned, horizon))
    keys = per_episode[0].keys()
    return {"planner": name, "episodes": len(episodes), **{k: float(np.mean([m[k] for m in per_episode])) for k in keys}}


def world_model_chooser(model: LatentActionModel, step: Step, cfg: PlannerConfig) -> Callable[[Episode, int], np.ndarray]:
    cost = get_cost(cfg.cost)

    def choose(episode: Episode, index: int) -> np.ndarray:
        start = encode_observation(model, episode.action_frames[0])
        goal = encode_observation(model, episode.action_frames[cfg.horizon])
        seeded = dataclasses.replace(cfg, seed=cfg.seed + index)
        return plan(step, cost, start, goal, seeded).actions.numpy()

    return choose


def random_chooser(cfg: PlannerConfig, seed: int = 0) -> Callable[[Episode, int], np.ndarray]:
    def choose(episode: Episode, index: int) -> np.ndarray:
        rng = np.random.default_rng([seed, index])
        low, high = np.asarray(cfg.action_low), np.asarray(cfg.action_high)
        return rng.uniform(low, high, size=(cfg.horizon, len(low))).astype(np.float32)

    return choose


def zero_chooser(cfg: PlannerConfig) -> Callable[[Episode, int], np.ndarray]:
    def choose(episode: Episode, index: int) -> np.ndarray:
        return np.zeros((cfg.horizon, len(cfg.action_low)), dtype=np.float32)

    return choose
