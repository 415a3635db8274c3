"""Frame-causal video decoder: states `[B, S, N, D]` -> pixels `[B, S·tubelet, 3, H, W]` in [0, 1].

A ViT with 3-D RoPE and a block-causal mask over time (PAPER-NOTES §1.5), then a head from
tokens to pixels: `linear` (the paper's: each token emits its own tubelet of patches, so
neighbouring patches never see each other and renders show block edges) or `conv` (pixel-shuffle
upsampling with 3x3 convolutions, applied to each frame on its own, so it stays frame-causal).
Used for renders and pixel metrics only; it is trained on frozen encoder states (or jointly with
the tiny encoder).
"""

from __future__ import annotations

import torch
from torch import nn

from training.config import DecoderConfig
from training.models.modules import Block, block_causal_mask, grid_positions, init_weights, rope_tables


class ConvPixelHead(nn.Module):
    """Token grid `[M, D, g, g]` -> pixels `[M, tubelet*3, g*p, g*p]` by log2(p) pixel-shuffle x2 steps."""

    def __init__(self, dim: int, patch: int, tubelet: int, channels: int) -> None:
        super().__init__()
        if patch & (patch - 1):
            raise ValueError(f"the conv decoder head needs a power-of-two patch size, got {patch}")
        layers: list[nn.Module] = []
        c_in, c = dim, channels
        for _ in range(patch.bit_length() - 1):
            layers += [nn.Conv2d(c_in, 4 * c, 3, padding=1), nn.PixelShuffle(2), nn.GELU()]
            c_in, c = c, max(c // 2, 8)
        layers.append(nn.Conv2d(c_in, tubelet * 3, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        return self.net(grid)


class FrameCausalDecoder(nn.Module):
    def __init__(
        self, cfg: DecoderConfig, state_dim: int, grid: int, patch: int, tubelet: int, max_steps: int
    ) -> None:
        super().__init__()
        self.cfg, self.grid, self.patch, self.tubelet = cfg, grid, patch, tubelet
        self.proj_in = nn.Linear(state_dim, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio, rope_axes=3) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        if cfg.head == "conv":
            self.head: nn.Module = ConvPixelHead(cfg.dim, patch, tubelet, cfg.head_channels)
        else:
            self.head = nn.Linear(cfg.dim, tubelet * patch * patch * 3)
        init_weights(self)
        self.max_steps = max_steps
        cos, sin = rope_tables(grid_positions(max_steps, grid, grid), cfg.dim // cfg.heads)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        b, s, n, _ = states.shape
        if s > self.max_steps:
            raise ValueError(f"decoder got {s} steps; at most {self.max_steps}")
        mask = block_causal_mask(s, n, device=states.device)
        rope = (self.rope_cos[: s * n], self.rope_sin[: s * n])
        x = self.proj_in(states).reshape(b, s * n, -1)  # [B, S*N, Dd]
        for block in self.blocks:
            x = block(x, mask, rope)
        g, p, tb = self.grid, self.patch, self.tubelet
        x = self.norm(x)
        if isinstance(self.head, ConvPixelHead):
            grid = x.reshape(b * s, g, g, -1).permute(0, 3, 1, 2)  # [B*S, Dd, g, g]
            video = self.head(grid).reshape(b, s * tb, 3, g * p, g * p)  # frame-wise: no mixing over time
            return torch.sigmoid(video)
        x = self.head(x)  # [B, S*N, tubelet*p*p*3]
        x = x.reshape(b, s, g, g, tb, p, p, 3)
        x = x.permute(0, 1, 4, 7, 2, 5, 3, 6)  # [B, S, tb, 3, g, p, g, p]
        video = x.reshape(b, s * tb, 3, g * p, g * p)
        return torch.sigmoid(video)
