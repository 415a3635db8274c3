"""Shared transformer pieces: the block-causal mask, 3-D RoPE, attention and ViT blocks.

Every network in lawm (encoder, IDM, world model, decoder, controller) is built from these.
RoPE is computed with real cos/sin tables (no complex numbers) so the graphs export to ONNX.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def block_causal_mask(num_steps: int, tokens_per_step: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean attention mask where a token at time t sees every token at times <= t.

    Returns `[T*N, T*N]`, True where attention is allowed (the convention of
    `F.scaled_dot_product_attention`).
    """
    step = torch.arange(num_steps, device=device).repeat_interleave(tokens_per_step)  # [T*N]
    return step[:, None] >= step[None, :]


def rope_tables(
    positions: torch.Tensor, head_dim: int, base: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for rotary embeddings over several axes.

    `positions` is `[L, A]` (A axes, e.g. time, row, column). The head dimension is split
    evenly over the axes (each part even-sized); leftover channels are left unrotated.
    Returns cos, sin of shape `[L, head_dim]`.
    """
    length, axes = positions.shape
    per_axis = (head_dim // axes) // 2 * 2  # channels per axis, even
    cos_parts, sin_parts = [], []
    for a in range(axes):
        half = per_axis // 2
        inv_freq = 1.0 / (base ** (torch.arange(half, dtype=torch.float32, device=positions.device) / max(half, 1)))
        angles = positions[:, a : a + 1].float() * inv_freq[None, :]  # [L, half]
        angles = torch.cat([angles, angles], dim=-1)  # [L, per_axis]
        cos_parts.append(angles.cos())
        sin_parts.append(angles.sin())
    rest = head_dim - per_axis * axes
    if rest:
        cos_parts.append(torch.ones(length, rest, device=positions.device))
        sin_parts.append(torch.zeros(length, rest, device=positions.device))
    return torch.cat(cos_parts, dim=-1), torch.cat(sin_parts, dim=-1)


def _rotate_half_per_axis(x: torch.Tensor, per_axis: int, axes: int) -> torch.Tensor:
    """Within each axis' channel block [a, b] -> [-b, a]; unrotated tail channels map to 0."""
    parts = []
    for a in range(axes):
        block = x[..., a * per_axis : (a + 1) * per_axis]
        first, second = block.chunk(2, dim=-1)
        parts.append(torch.cat([-second, first], dim=-1))
    rest = x.shape[-1] - per_axis * axes
    if rest:
        parts.append(torch.zeros_like(x[..., x.shape[-1] - rest :]))
    return torch.cat(parts, dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, axes: int) -> torch.Tensor:
    """Rotate `x` `[B, H, L, Dh]` by the tables `[L, Dh]` from `rope_tables`."""
    per_axis = (x.shape[-1] // axes) // 2 * 2
    return x * cos + _rotate_half_per_axis(x, per_axis, axes) * sin


def grid_positions(num_steps: int, rows: int, cols: int, device: torch.device | None = None) -> torch.Tensor:
    """(t, row, col) of every token of a `[T, rows*cols]` sequence, flattened time-major: `[T*rows*cols, 3]`."""
    t = torch.arange(num_steps, device=device)
    r = torch.arange(rows, device=device)
    c = torch.arange(cols, device=device)
    grid = torch.stack(torch.meshgrid(t, r, c, indexing="ij"), dim=-1)  # [T, rows, cols, 3]
    return grid.reshape(-1, 3)


class Attention(nn.Module):
    """Multi-head self-attention with optional RoPE and mask."""

    def __init__(self, dim: int, heads: int, rope_axes: int = 0) -> None:
        super().__init__()
        assert dim % heads == 0, f"width {dim} must be divisible by heads {heads}"
        self.heads = heads
        self.rope_axes = rope_axes
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,  # [B, L, D]
        mask: torch.Tensor | None = None,  # [L, L] bool, True = may attend
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,  # cos, sin [L, Dh]
    ) -> torch.Tensor:
        b, length, dim = x.shape
        qkv = self.qkv(x).reshape(b, length, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, L, Dh]
        if rope is not None and self.rope_axes:
            q = apply_rope(q, *rope, axes=self.rope_axes)
            k = apply_rope(k, *rope, axes=self.rope_axes)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, L, Dh]
        return self.proj(out.transpose(1, 2).reshape(b, length, dim))

    def forward_cached(
        self,
        x: torch.Tensor,  # [B, L, D] the new tokens only
        past_k: torch.Tensor | None,  # [B, H, P, Dh] keys of earlier tokens, RoPE already applied
        past_v: torch.Tensor | None,  # [B, H, P, Dh]
        mask: torch.Tensor | None = None,  # [L, P+L] bool over past and new tokens, True = may attend
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,  # cos, sin [L, Dh] at the new tokens' positions
        buffers: tuple[torch.Tensor, torch.Tensor] | None = None,  # k, v [B, H, C, Dh], C >= P+L
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attention of new tokens over earlier tokens' cached keys/values and their own.

        Returns (output [B, L, D], keys [B, H, P+L, Dh], values [B, H, P+L, Dh]): the cache extended
        by the new tokens. Keys are cached after RoPE, so a token's rotation is fixed by the position
        it was computed at, exactly as in the uncached `forward`.

        Without `buffers` the extended cache is a new tensor (the past is copied: what an exported
        graph does). With `buffers` whose first P tokens hold the past, the new keys/values are
        written into them in place and views of their first P+L tokens are returned: no copy of
        the past, so a step costs its own tokens plus reading the cache once."""
        b, length, dim = x.shape
        qkv = self.qkv(x).reshape(b, length, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, L, Dh]
        if rope is not None and self.rope_axes:
            q = apply_rope(q, *rope, axes=self.rope_axes)
            k = apply_rope(k, *rope, axes=self.rope_axes)
        if buffers is not None:
            past = 0 if past_k is None else past_k.shape[2]
            buffers[0][:, :, past : past + length] = k
            buffers[1][:, :, past : past + length] = v
            k, v = buffers[0][:, :, : past + length], buffers[1][:, :, : past + length]  # [B, H, P+L, Dh] views
        elif past_k is not None and past_v is not None:
            k = torch.cat([past_k, k], dim=2)  # [B, H, P+L, Dh]
            v = torch.cat([past_v, v], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, L, Dh]
        return self.proj(out.transpose(1, 2).reshape(b, length, dim)), k, v


class CrossAttention(nn.Module):
    """Queries attend to a separate context sequence (used by the IDM pooler and the controller)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, lq, dim = queries.shape  # queries [B, Lq, D], context [B, Lc, D]
        dh = dim // self.heads
        q = self.q(queries).reshape(b, lq, self.heads, dh).transpose(1, 2)  # [B, H, Lq, Dh]
        kv = self.kv(context).reshape(b, context.shape[1], 2, self.heads, dh)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, Lc, Dh]
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, lq, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm ViT block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, rope_axes: int = 0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, rope_axes)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask, rope)
        return x + self.mlp(self.norm2(x))


def init_weights(module: nn.Module) -> None:
    """Truncated-normal linear weights, zero biases (ViT convention)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
