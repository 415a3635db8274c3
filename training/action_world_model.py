"""The action-labelled baseline: the same world model, conditioned on the TRUE actions.

It is what the paper compares latent-action planning against (V-JEPA 2-AC on DROID, NWM on
RECON): a world model trained with action labels on the same data. To isolate the effect of
the latent actions, it shares everything with the LAM's world model (architecture, frozen
encoder, frame-wise AdaLN-zero, teacher-forced L1) except its conditioning input, which is the
real action instead of z_t.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from training.controller_training import LabelledSet
from training.models.lam import LatentActionModel
from training.models.world_model import WorldModel, teacher_forced_loss
from training.optim import lr_factor
from training.world_model_steps import world_model_step


@dataclass(frozen=True)
class ActionWorldModelTraining:
    steps: int = 400
    batch: int = 8  # episodes per step
    lr: float = 1e-3
    weight_decay: float = 0.04
    warmup: float = 0.1
    seed: int = 0


def train_action_world_model(
    model: LatentActionModel, data: LabelledSet, training: ActionWorldModelTraining = ActionWorldModelTraining()
) -> tuple[WorldModel, dict[str, Any]]:
    """Teacher-forced L1 on the encoded episodes, conditioned on the recorded actions."""
    torch.manual_seed(training.seed)
    action_dim = data.actions.shape[-1]
    wm = WorldModel(model.cfg.world_model, model.encoder.dim, model.encoder.grid, latent_dim=action_dim)
    optimizer = torch.optim.AdamW(wm.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    generator = torch.Generator().manual_seed(training.seed)
    episodes = data.actions.shape[0]
    losses = []
    for step in range(training.steps):
        for group in optimizer.param_groups:
            group["lr"] = training.lr * lr_factor(step, training.steps, training.warmup, 0.0)
        pick = torch.randint(0, episodes, (min(training.batch, episodes),), generator=generator)
        loss, _ = teacher_forced_loss(wm, data.states[pick], data.actions[pick])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    wm.eval()
    return wm, {"first_l1": losses[0], "final_l1": sum(losses[-20:]) / len(losses[-20:])}


def action_step(wm: WorldModel, context: str = "one-frame") -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | Any:
    """The planner's step through the action-conditioned model: `step(states [B, N, D], actions
    [B, A]) -> next states` for `context="one-frame"`, a context-keeping `ContextStep` for `"full"`."""
    return world_model_step(wm, lambda actions, states: actions, context)
