"""The action-labelled world model as a closed-loop policy for `lawm bench robot`, in this process.

The reference the paper compares a latent-action model with is a world model conditioned on the
recorded actions, trained on the same frozen encoder's states. It is a baseline, not a served
model, so it plans here rather than through the API, with what a plan session does: the preset's
settings for the first (cold) step, then the session's warm settings from the previous plan
shifted by the executed action, a fresh seed each step. Its latency is in-process (no HTTP, no
batcher), so the bench reports only its outcomes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.inference.sessions import shifted, warm_config
from training.action_world_model import ActionWorldModelTraining, action_step, train_action_world_model
from training.controller_training import labelled_set
from training.envs.episodes import record_episode
from training.evaluation.common import load_lam
from training.evaluation.planning import encode_observation
from training.planning import get_cost, plan, preset

TRAIN_SEED = 500_000  # labelled training episodes: disjoint from the bench's episode worlds


class LabelledPolicy:
    """Plans with an action-conditioned world model trained on `train_episodes` labelled episodes."""

    def __init__(self, checkpoint: Path, preset_name: str = "recon", overrides: dict[str, Any] | None = None,
                 train_episodes: int = 48, steps: int = 400, seed: int = 0) -> None:
        self.model = load_lam(checkpoint)
        size = self.model.cfg.encoder.image_size
        episodes = [record_episode("navigation", TRAIN_SEED + seed + i, steps=8, image_size=size)
                    for i in range(train_episodes)]
        self.world_model, self.training = train_action_world_model(
            self.model, labelled_set(self.model, episodes), ActionWorldModelTraining(steps=steps, seed=seed))
        self.cold = preset(preset_name, seed=seed, **(overrides or {}))
        self.warm = warm_config(self.cold, None, None)
        self.step_fn = action_step(self.world_model, self.cold.context)
        self.cost = get_cost(self.cold.cost)
        self.goal: torch.Tensor | None = None
        self.previous: np.ndarray | None = None  # [H, A] the last plan
        self.steps = 0

    def start(self, goal_image: np.ndarray) -> None:
        """A new episode towards the goal seen in `goal_image` (uint8 `[H, W, 3]`)."""
        self.goal = encode_observation(self.model, goal_image)
        self.previous, self.steps = None, 0

    @torch.no_grad()
    def act(self, frame: np.ndarray) -> np.ndarray:
        """The action to execute now `[A]` for the newest frame."""
        assert self.goal is not None, "call start() first"
        state = encode_observation(self.model, frame)
        cfg = self.cold if self.previous is None else self.warm
        cfg = dataclasses.replace(cfg, seed=cfg.seed + self.steps)
        warm = None if self.previous is None else torch.from_numpy(shifted(self.previous, 1))
        result = plan(self.step_fn, self.cost, state, self.goal, cfg, initial_mean=warm)
        self.previous, self.steps = result.actions.numpy(), self.steps + 1
        return self.previous[0]
