"""Train a controller on a small labelled set: real actions -> the frozen IDM's latents.

Following PAPER-NOTES §1.6, each observation (the frame before each action) is duplicated into a
2-frame tubelet, so state i is one instant and the IDM latent between states i and i+1 is
exactly real action i. The encoder, IDM and world model stay frozen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from training.envs.episodes import Episode
from training.models.controller import ControllerConfig, build_controller, controller_loss
from training.models.lam import LatentActionModel
from training.optim import lr_factor


def duplicate_frames(frames: np.ndarray) -> torch.Tensor:
    """uint8 `[T, H, W, 3]` -> video `[2T, 3, H, W]` with every frame repeated (one state per frame)."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # [T, 3, H, W]
    return video.repeat_interleave(2, dim=0)


@dataclass
class LabelledSet:
    actions: torch.Tensor  # [E, T, A] real actions
    states: torch.Tensor  # [E, T+1, N, D] encoder states, one per observation
    latents: torch.Tensor  # [E, T, Z] the frozen IDM's latents between consecutive states


@torch.no_grad()
def labelled_set(model: LatentActionModel, episodes: list[Episode], steps: int | None = None) -> LabelledSet:
    """Encode episodes and label every transition with the IDM's latent."""
    actions, states, latents = [], [], []
    for episode in episodes:
        t = min(steps or episode.num_actions, episode.num_actions)
        video = duplicate_frames(episode.action_frames[: t + 1])[None]  # [1, 2(T+1), 3, H, W]
        s = model.encode(video)  # [1, T+1, N, D]
        states.append(s[0])
        latents.append(model.latent_actions(s)[0])  # [T, Z]
        actions.append(torch.from_numpy(episode.actions[:t]).float())
    return LabelledSet(torch.stack(actions), torch.stack(states), torch.stack(latents))


@dataclass(frozen=True)
class ControllerTraining:
    steps: int = 600
    batch: int = 32  # transitions per step
    lr: float = 1e-3
    weight_decay: float = 0.04
    warmup: float = 0.1  # the paper: 300 of 3000 iterations
    seed: int = 0


def train_controller(
    model: LatentActionModel, data: LabelledSet, cfg: ControllerConfig, training: ControllerTraining = ControllerTraining()
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """AdamW (betas 0.9, 0.999), warm-up then cosine, L2 to the IDM latents (the paper's recipe)."""
    torch.manual_seed(training.seed)
    controller = build_controller(cfg, model.latent_dim, model.encoder.dim, model.encoder.grid)
    optimizer = torch.optim.AdamW(controller.parameters(), lr=training.lr, weight_decay=training.weight_decay, betas=(0.9, 0.999))
    e, t, _ = data.actions.shape
    flat_actions = data.actions.reshape(e * t, 1, -1)  # every transition is a sample
    flat_states = data.states[:, :-1].reshape(e * t, 1, *data.states.shape[2:])
    flat_latents = data.latents.reshape(e * t, 1, -1)
    generator = torch.Generator().manual_seed(training.seed)
    losses = []
    for step in range(training.steps):
        for group in optimizer.param_groups:
            group["lr"] = training.lr * lr_factor(step, training.steps, training.warmup, 0.0)
        pick = torch.randint(0, e * t, (min(training.batch, e * t),), generator=generator)
        loss = controller_loss(controller(flat_actions[pick], flat_states[pick]), flat_latents[pick])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    controller.eval()
    with torch.no_grad():
        final = controller_loss(controller(flat_actions, flat_states), flat_latents).item()
    return controller, {"final_l2": final, "first_l2": losses[0], "transitions": e * t}
