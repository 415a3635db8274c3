"""Inverse dynamics model g_φ: `(s_t, s_{t+1})` -> latent action z_t ∈ R^128.

PAPER-NOTES §1.3 gives no architecture; we follow its recommendation: a small transformer over
the concatenated tokens of the two states (with a learned "which step" embedding and 2-D RoPE),
then an attentive pooler (one learned query) and a linear head. `fusion: channels` instead gives
each grid cell one token holding both states (early fusion: local motion is visible from the first
layer, and half the tokens); `fusion: correlation` adds to each cell's token its local correlation
volume (`local_correlation`), the cue optical-flow networks read motion from: where in s_{t+1} the
cell's content went, whatever the content is. The noisy variant outputs
mean and log-variance (2 × 128); the regularizer turns the raw output into z.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.config import IdmConfig
from training.models.modules import Block, CrossAttention, grid_positions, init_weights, rope_tables


def local_correlation(current: torch.Tensor, following: torch.Tensor, grid: int, radius: int) -> torch.Tensor:
    """Cosine similarity of each cell's features in `current` to `following`'s at every offset
    within `radius` cells: `[M, N, K]` × 2 (N = grid², row-major) -> `[M, N, (2r+1)²]`, offsets
    row-major from (-r, -r). Cells beyond the grid's edge read zero similarity. Built from padding
    and slices, so it exports to ONNX."""
    m, n, k = current.shape
    size = 2 * radius + 1
    a = F.normalize(current, dim=-1).reshape(m, grid, grid, k)
    b = F.normalize(following, dim=-1).reshape(m, grid, grid, k).permute(0, 3, 1, 2)  # [M, K, g, g]
    b = F.pad(b, (radius, radius, radius, radius)).permute(0, 2, 3, 1)  # [M, g+2r, g+2r, K]
    sims = [(a * b[:, dy : dy + grid, dx : dx + grid]).sum(-1) for dy in range(size) for dx in range(size)]
    return torch.stack(sims, dim=-1).reshape(m, n, size * size)  # [M, N, (2r+1)²]


class InverseDynamicsModel(nn.Module):
    def __init__(self, cfg: IdmConfig, state_dim: int, grid: int, out_dim: int) -> None:
        """`out_dim` is latent_dim, or 2·latent_dim for the noisy regularizer (mean, log-variance)."""
        super().__init__()
        self.cfg = cfg
        self.out_dim = out_dim
        self.fused = cfg.fusion in ("channels", "correlation")
        self.grid = grid
        self.proj_in = nn.Linear(2 * state_dim if self.fused else state_dim, cfg.dim)
        if cfg.fusion == "correlation":
            # One projection for both states, so the same content correlates with itself
            self.corr_features = nn.Linear(state_dim, cfg.correlation_dim)
            self.corr_in = nn.Linear((2 * cfg.correlation_radius + 1) ** 2, cfg.dim)
        if not self.fused:
            self.step_embed = nn.Parameter(torch.zeros(2, cfg.dim))  # marks s_t vs s_{t+1}
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, rope_axes=2) for _ in range(cfg.depth))
        self.query = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pool = CrossAttention(cfg.dim, cfg.heads)
        self.norm = nn.LayerNorm(cfg.dim)
        # Normalising the pooled token keeps z's spread across clips at unit scale from the start;
        # without it the freshly initialised pooler emits a near-constant latent (std ~1e-3).
        self.norm_pooled = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, out_dim)
        init_weights(self)
        if not self.fused:
            nn.init.trunc_normal_(self.step_embed, std=0.02)
        nn.init.trunc_normal_(self.query, std=0.02)
        positions = grid_positions(1, grid, grid)[:, 1:]  # [N, 2]
        if not self.fused:
            positions = positions.repeat(2, 1)  # [2N, 2]: same grid for both steps
        cos, sin = rope_tables(positions, cfg.dim // cfg.heads)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def pair(self, current: torch.Tensor, following: torch.Tensor) -> torch.Tensor:
        """One latent per pair: `[M, N, D]` × 2 -> `[M, out_dim]`."""
        m, n, _ = current.shape
        # The pair enters as (s_t, s_{t+1} − s_t): the same information, but the change is explicit,
        # so even a freshly initialised IDM emits latents that vary with the motion rather than
        # with the scene, which the world model already sees (otherwise z collapses early).
        if self.fused:
            x = self.proj_in(torch.cat([current, following - current], dim=-1))  # [M, N, Di]
            if self.cfg.fusion == "correlation":
                corr = local_correlation(self.corr_features(current), self.corr_features(following),
                                         self.grid, self.cfg.correlation_radius)  # [M, N, (2r+1)²]
                x = x + self.corr_in(corr * math.sqrt(self.cfg.correlation_dim))
        else:
            x = torch.cat([current, following - current], dim=1)  # [M, 2N, D]
            x = self.proj_in(x) + self.step_embed.repeat_interleave(n, dim=0)[None]  # [M, 2N, Di]
        rope = (self.rope_cos, self.rope_sin)
        for block in self.blocks:
            x = block(x, rope=rope)
        pooled = self.pool(self.query.expand(m, -1, -1), self.norm(x))  # [M, 1, Di]
        return self.head(self.norm_pooled(pooled[:, 0]))  # [M, out_dim]

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """Latents for every consecutive pair: states `[B, T, N, D]` -> `[B, T-1, out_dim]`."""
        b, t, n, d = states.shape
        current = states[:, :-1].reshape(b * (t - 1), n, d)
        following = states[:, 1:].reshape(b * (t - 1), n, d)
        return self.pair(current, following).reshape(b, t - 1, self.out_dim)
