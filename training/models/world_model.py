"""World model p_ψ: `(s_{0:t}, z_t)` -> ŝ_{t+1}.

A ViT with 3-D RoPE (time, row, column), block-causal attention over time (every token at step
t sees all tokens at steps <= t), and AdaLN-zero conditioning applied frame by frame: the
tokens of step t are modulated by z_t only (PAPER-NOTES §1.2; after jepa-wms' FWAdaLNBlock).
The modulation layers are zero-initialised, so at init every block is the identity.
Trained with teacher forcing and an L1 loss on the next state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.config import WorldModelConfig
from training.models.modules import (
    Attention,
    Mlp,
    block_causal_mask,
    grid_positions,
    init_weights,
    rope_tables,
)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class FrameAdaLNBlock(nn.Module):
    """Pre-norm block whose norms and residual gates are set per frame from that frame's latent."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, cond_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = Attention(dim, heads, rope_axes=3)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.mlp = Mlp(dim, mlp_ratio)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 6 * dim))

    def forward(
        self,
        x: torch.Tensor,  # [B, T, N, D]
        cond: torch.Tensor,  # [B, T, C] one latent per frame
        mask: torch.Tensor,  # [T*N, T*N]
        rope: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        b, t, n, d = x.shape
        mods = self.modulation(cond)[:, :, None, :]  # [B, T, 1, 6D]: broadcast over the frame's tokens
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mods.chunk(6, dim=-1)
        h = modulate(self.norm1(x), shift_a, scale_a).reshape(b, t * n, d)
        x = x + gate_a * self.attn(h, mask, rope).reshape(b, t, n, d)
        h = modulate(self.norm2(x), shift_m, scale_m)
        return x + gate_m * self.mlp(h)


class WorldModel(nn.Module):
    def __init__(self, cfg: WorldModelConfig, state_dim: int, grid: int, latent_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.grid = grid
        self.proj_in = nn.Linear(state_dim, cfg.dim)
        self.blocks = nn.ModuleList(
            FrameAdaLNBlock(cfg.dim, cfg.heads, cfg.mlp_ratio, latent_dim) for _ in range(cfg.depth)
        )
        self.norm_out = nn.LayerNorm(cfg.dim, elementwise_affine=False)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(latent_dim, 2 * cfg.dim))
        self.proj_out = nn.Linear(cfg.dim, state_dim)
        init_weights(self)
        # The model predicts the change s_{t+1} − s_t (the paper does not say which); with the read-out
        # at zero it starts as the copy baseline, so training goes into the motion — what z explains —
        # instead of first re-learning to copy the current state.
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)
        for block in self.blocks:  # AdaLN-zero: every block starts as the identity
            nn.init.zeros_(block.modulation[1].weight)
            nn.init.zeros_(block.modulation[1].bias)
        nn.init.zeros_(self.final_modulation[1].weight)
        nn.init.zeros_(self.final_modulation[1].bias)
        positions = grid_positions(cfg.max_steps, grid, grid)  # [S*N, 3]
        cos, sin = rope_tables(positions, cfg.dim // cfg.heads)
        self.register_buffer("rope_cos", cos, persistent=False)  # sliced to the context length
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, states: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """states `[B, T, N, D]` (s_0..s_{T-1}), latents `[B, T, Z]` (z_0..z_{T-1})
        -> predictions `[B, T, N, D]` where output t is ŝ_{t+1}."""
        b, t, n, _ = states.shape
        if t > self.cfg.max_steps:
            raise ValueError(f"context of {t} steps exceeds world_model.max_steps={self.cfg.max_steps}")
        length = t * n
        mask = block_causal_mask(t, n, device=states.device)
        rope = (self.rope_cos[:length], self.rope_sin[:length])
        x = self.proj_in(states)  # [B, T, N, Dw]
        for block in self.blocks:
            x = block(x, latents, mask, rope)
        shift, scale = self.final_modulation(latents)[:, :, None, :].chunk(2, dim=-1)
        return states + self.proj_out(modulate(self.norm_out(x), shift, scale))  # [B, T, N, D]

    def step(self, states: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Planner-facing single step: context `[B, T, N, D]` and its latents `[B, T, Z]`
        (the last one is the action to apply) -> the next state ŝ_T `[B, N, D]`."""
        return self(states, latents)[:, -1]


def autoregressive_rollout(
    model: WorldModel,
    context: torch.Tensor,  # [B, T0, N, D] observed states
    context_latents: torch.Tensor,  # [B, T0-1, Z] latents between the observed states
    actions: torch.Tensor,  # [B, H, Z] latents to apply from the last observed state on
) -> torch.Tensor:
    """Autoregressive rollout: returns the predicted states `[B, H, N, D]`.

    The context window slides once it reaches `max_steps` so arbitrarily long rollouts work.
    """
    states, latents, outputs = context, context_latents, []
    max_steps = model.cfg.max_steps
    for h in range(actions.shape[1]):
        latents = torch.cat([latents, actions[:, h : h + 1]], dim=1)  # [B, T, Z]
        states, latents = states[:, -max_steps:], latents[:, -max_steps:]
        nxt = model.step(states, latents)  # [B, N, D]
        outputs.append(nxt)
        states = torch.cat([states, nxt[:, None]], dim=1)
    return torch.stack(outputs, dim=1)


def teacher_forced_loss(
    model: WorldModel, states: torch.Tensor, latents: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """L1 next-state loss. states `[B, T, N, D]`, latents `[B, T-1, Z]` -> (loss, predictions `[B, T-1, N, D]`)."""
    predictions = model(states[:, :-1], latents)
    return F.l1_loss(predictions, states[:, 1:]), predictions
