"""The planner's step through a torch world model: latents from real actions, then one world-model step.

`world_model_step` gives either the one-state step (`context="one-frame"`: the world model sees the
current state alone) or a `KeptContextStep` (`"full"`: every candidate keeps its whole rollout as
context through the KV cache). The latent-action model (controller) and the action-labelled
baseline both plan through it, offline and in the benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from training.models.world_model import RolloutContext, WorldModel, advance
from training.planning import ContextStep
from training.precision import autocast

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ToLatent = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (actions [B, A], states [B, N, D]) -> [B, Z]


class KeptContextStep:
    """A `ContextStep` through a world model: every candidate keeps its whole rollout as context.

    The carry is (the candidates' `RolloutContext` — KV cache and frames —, their current states
    `[B, N, D]`). Each `advance` maps the actions to latents from the current states, then runs one
    cached world-model step: cost linear in the context, predictions equal to re-running the
    world model on the whole trajectory."""

    def __init__(self, world_model: WorldModel, to_latent: ToLatent, precision: str = "fp32") -> None:
        self.world_model, self.to_latent, self.precision = world_model, to_latent, precision

    def begin(self, state: torch.Tensor, batch: int) -> tuple[RolloutContext | None, torch.Tensor]:
        return None, state.unsqueeze(0).expand(batch, *state.shape)  # [B, N, D], a view

    @torch.no_grad()
    def advance(
        self, carry: tuple[RolloutContext | None, torch.Tensor], actions: torch.Tensor
    ) -> tuple[tuple[RolloutContext, torch.Tensor], torch.Tensor]:
        context, states = carry
        latents = self.to_latent(actions, states)  # [B, Z]
        with autocast(self.precision, states.device):
            nxt, context = advance(self.world_model, context, states, latents)  # [B, N, D]
        nxt = nxt.float()
        return (context, nxt), nxt


def world_model_step(
    world_model: WorldModel, to_latent: ToLatent, context: str = "one-frame", precision: str = "fp32"
) -> Step | ContextStep:
    """The planner's step through `world_model`, with latents from `to_latent(actions, states)`:
    a `KeptContextStep` for `context="full"`, the one-state step for `"one-frame"`. `precision`
    runs the world model's calls in bf16 (`training.precision`)."""
    if context == "full":
        return KeptContextStep(world_model, to_latent, precision)
    if context != "one-frame":
        raise ValueError(f"context must be 'full' or 'one-frame', got {context!r}")

    @torch.no_grad()
    def step(states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        latents = to_latent(actions, states)  # [B, Z]
        with autocast(precision, states.device):
            return world_model.next_state(states[:, None], latents[:, None]).float()  # [B, N, D]

    return step
