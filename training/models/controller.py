"""Controller c: a real action (+ the state it is taken from) -> a latent action (PAPER-NOTES §1.6).

Two variants, both trained with an L2 loss to the frozen IDM's latent on a small labelled set:

- `MlpController` (actions only): a 3-layer MLP. The paper notes it collapses towards a
  "no movement" latent because latents are camera-relative: the same real action looks
  different from different states.
- `StateController` (actions + previous state, the one the paper uses): 2 self-attention blocks
  over the tokens of the state the action starts from, one cross-attention block in which the
  embedded action (3-layer MLP) queries those tokens, and a linear head to the latent size.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from training.config import Strict
from training.models.modules import Block, CrossAttention, Mlp, grid_positions, init_weights, rope_tables


class ControllerConfig(Strict):
    kind: Literal["mlp", "state"] = "state"
    action_dim: int = Field(3, ge=1, le=64)  # size of a real action
    dim: int = 128  # width of the action embedding and of the attention blocks (the paper: 1024)
    heads: int = 4
    depth: int = 2  # self-attention blocks over the state's tokens (the paper: 2)


def action_mlp(action_dim: int, dim: int) -> nn.Sequential:
    """The paper's 3-layer action embedding."""
    return nn.Sequential(nn.Linear(action_dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))


class MlpController(nn.Module):
    def __init__(self, cfg: ControllerConfig, latent_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = action_mlp(cfg.action_dim, cfg.dim)
        self.head = nn.Linear(cfg.dim, latent_dim)
        init_weights(self)

    def forward(self, actions: torch.Tensor, states: torch.Tensor | None = None) -> torch.Tensor:
        """actions `[B, T, A]` (states ignored) -> latents `[B, T, Z]`."""
        return self.head(F.gelu(self.embed(actions)))


class StateController(nn.Module):
    def __init__(self, cfg: ControllerConfig, latent_dim: int, state_dim: int, grid: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = action_mlp(cfg.action_dim, cfg.dim)
        self.state_in = nn.Linear(state_dim, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, rope_axes=2) for _ in range(cfg.depth))
        self.norm_q = nn.LayerNorm(cfg.dim)
        self.norm_kv = nn.LayerNorm(cfg.dim)
        self.cross = CrossAttention(cfg.dim, cfg.heads)
        self.norm_mlp = nn.LayerNorm(cfg.dim)
        self.mlp = Mlp(cfg.dim)
        self.norm_out = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, latent_dim)
        init_weights(self)
        cos, sin = rope_tables(grid_positions(1, grid, grid)[:, 1:], cfg.dim // cfg.heads)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, actions: torch.Tensor, states: torch.Tensor | None = None) -> torch.Tensor:
        """actions `[B, T, A]`, states `[B, T, N, D]` (the state each action starts from) -> `[B, T, Z]`."""
        if states is None:
            raise ValueError("the state controller needs the state each action starts from")
        b, t, n, d = states.shape
        x = self.state_in(states.reshape(b * t, n, d))  # [B*T, N, C]
        for block in self.blocks:
            x = block(x, rope=(self.rope_cos, self.rope_sin))
        query = self.embed(actions).reshape(b * t, 1, -1)  # [B*T, 1, C]
        query = query + self.cross(self.norm_q(query), self.norm_kv(x))
        query = query + self.mlp(self.norm_mlp(query))
        return self.head(self.norm_out(query[:, 0])).reshape(b, t, -1)  # [B, T, Z]


def build_controller(cfg: ControllerConfig, latent_dim: int, state_dim: int, grid: int) -> nn.Module:
    if cfg.kind == "mlp":
        return MlpController(cfg, latent_dim)
    return StateController(cfg, latent_dim, state_dim, grid)


def controller_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L2 to the frozen IDM's latents: mean over steps of the squared Euclidean distance."""
    return (predicted - target.detach()).pow(2).sum(-1).mean()
