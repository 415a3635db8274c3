"""World model p_ψ: `(s_{0:t}, z_t)` -> ŝ_{t+1}.

A ViT with 3-D RoPE (time, row, column), block-causal attention over time (every token at step
t sees all tokens at steps <= t), and AdaLN-zero conditioning applied frame by frame: the
tokens of step t are modulated by z_t only (PAPER-NOTES §1.2; after jepa-wms' FWAdaLNBlock).
The modulation layers are zero-initialised, so at init every block is the identity.
Trained with teacher forcing and an L1 loss on the next state. With `world_model.warp` the
predicted change is added to the current state resampled under an affine map of the token grid
read from the latent (`warp_tokens`), so a latent can carry how the view moved in a form the model
applies exactly.

Inference can run frame by frame with a key/value cache (`prefill`, then `step`): attention is
block-causal and the conditioning is per frame, so a frame's keys and values in every block depend
only on frames <= its own. They are computed once and reused by every later frame: a step costs one
frame's tokens through the blocks plus attention over the cache (linear in the context), where
re-running the context costs the whole context through the blocks (quadratic over a rollout). The
cache is two plain tensors, so it exports (ONNX past/present key-values, `exporters.components`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

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


def _linear_weights(src: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """Linear interpolation weights of the positions `src` `[...]` over `axis` `[g]`: `[..., g]`.
    Written as floor + fraction rather than a hat `relu(1 - |src - k|)`: the hat's gradient is zero
    at integer positions, so an identity warp (where training starts) would never move."""
    low = src.floor()
    frac = src - low  # its gradient is 1 everywhere: the warp learns from the identity
    at_low = (axis == low[..., None]).to(src.dtype)
    at_high = (axis == low[..., None] + 1).to(src.dtype)
    return at_low * (1 - frac[..., None]) + at_high * frac[..., None]


def warp_tokens(states: torch.Tensor, affine: torch.Tensor, grid: int) -> torch.Tensor:
    """Bilinear resampling of each frame's token grid under its own affine map.

    states `[B, T, N, D]` (N = grid², row-major), affine `[B, T, 6]` = (a, b, c, d, tx, ty): output
    token at (x, y) (columns, rows, centred on the grid, in tokens) reads the input at
    `(x + a·x + b·y + tx, y + c·x + d·y + ty)`, clamped to the grid's edge (the border repeats, as
    new content entering the view is unknown). All zeros is the identity. Built from elementwise ops
    and a matmul (interpolation weights `[B, T, N, N]`), so it exports to ONNX.
    """
    centre = (grid - 1) / 2
    axis = torch.arange(grid, device=states.device, dtype=states.dtype)  # [g]
    y, x = torch.meshgrid(axis - centre, axis - centre, indexing="ij")
    x, y = x.reshape(-1), y.reshape(-1)  # [N] output positions
    a, b, c, d, tx, ty = affine.unbind(-1)  # each [B, T]
    src_x = (x + a[..., None] * x + b[..., None] * y + tx[..., None] + centre).clamp(0, grid - 1)  # [B, T, N]
    src_y = (y + c[..., None] * x + d[..., None] * y + ty[..., None] + centre).clamp(0, grid - 1)
    wx, wy = _linear_weights(src_x, axis), _linear_weights(src_y, axis)  # [B, T, N, g] per column, row
    weights = (wy[..., :, None] * wx[..., None, :]).flatten(-2)  # [B, T, N, N]
    return weights @ states  # [B, T, N, D]


def warp_frames(frames: torch.Tensor, affine: torch.Tensor, grid: int) -> torch.Tensor:
    """Frames `[B, T, C, H, W]` (any resolution) resampled under `warp_tokens`' affine maps `[B, T, 6]`
    of a `grid`-token grid over the same view: the pixel-space picture of a latent's warp (training
    only: bilinear `grid_sample`, border padding)."""
    b, t, c, h, w = frames.shape
    a, bb, cc, d, tx, ty = affine.reshape(b * t, 6).unbind(-1)
    # token units -> grid_sample's [-1, 1] coordinates: one token is 2/grid
    theta = torch.stack([torch.stack([1 + a, bb, 2 * tx / grid], -1),
                         torch.stack([cc, 1 + d, 2 * ty / grid], -1)], dim=1)  # [B*T, 2, 3]
    sampling = F.affine_grid(theta, [b * t, c, h, w], align_corners=False)
    out = F.grid_sample(frames.reshape(b * t, c, h, w), sampling, padding_mode="border", align_corners=False)
    return out.reshape(b, t, c, h, w)


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

    def forward_cached(
        self,
        x: torch.Tensor,  # [B, T, N, D] the new frames
        cond: torch.Tensor,  # [B, T, C] their latents
        past_k: torch.Tensor | None,  # [B, H, P*N, Dh] earlier frames' keys in this block
        past_v: torch.Tensor | None,  # [B, H, P*N, Dh]
        mask: torch.Tensor | None,  # [T*N, (P+T)*N], or None when every new token may see every token
        rope: tuple[torch.Tensor, torch.Tensor],  # cos, sin [T*N, Dh] at the new frames' positions
        buffers: tuple[torch.Tensor, torch.Tensor] | None = None,  # k, v [B, H, C, Dh] to append into
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`forward` for new frames after cached ones, with the same operations in the same order;
        also returns this block's keys/values extended by the new frames `[B, H, (P+T)*N, Dh]`
        (views of `buffers` when given, see `Attention.forward_cached`)."""
        b, t, n, d = x.shape
        mods = self.modulation(cond)[:, :, None, :]  # [B, T, 1, 6D]
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mods.chunk(6, dim=-1)
        h = modulate(self.norm1(x), shift_a, scale_a).reshape(b, t * n, d)
        out, k, v = self.attn.forward_cached(h, past_k, past_v, mask, rope, buffers)
        x = x + gate_a * out.reshape(b, t, n, d)
        h = modulate(self.norm2(x), shift_m, scale_m)
        return x + gate_m * self.mlp(h), k, v


class KVCache(NamedTuple):
    """Every block's keys and values for the frames seen so far, as two plain tensors.

    keys, values: `[B, layers, heads, T*N, Dh]`, the token axis time-major (frame 0's N tokens
    first), keys after RoPE. Batch first like every exported tensor, so a row's cache is split,
    joined and broadcast as one unit.
    """

    keys: torch.Tensor
    values: torch.Tensor

    def frames(self, tokens_per_frame: int) -> int:
        return self.keys.shape[3] // tokens_per_frame

    def select(self, rows: torch.Tensor) -> KVCache:
        """The cache of some rows (an index tensor `[B']`), e.g. to resample planner candidates."""
        return KVCache(self.keys[rows], self.values[rows])


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
        # The latent's affine map of the token grid (world_model.warp); a zero latent is always the identity
        self.warp_modulation = nn.Linear(latent_dim, 6) if cfg.warp else None
        if self.warp_modulation is not None:
            if cfg.warp_init:
                nn.init.normal_(self.warp_modulation.weight, std=cfg.warp_init)
            else:
                nn.init.zeros_(self.warp_modulation.weight)
            nn.init.zeros_(self.warp_modulation.bias)
        positions = grid_positions(cfg.max_steps, grid, grid)  # [S*N, 3]
        cos, sin = rope_tables(positions, cfg.dim // cfg.heads)
        self.register_buffer("rope_cos", cos, persistent=False)  # sliced to the context length
        self.register_buffer("rope_sin", sin, persistent=False)

    @property
    def tokens(self) -> int:
        """Tokens per frame (N)."""
        return self.grid * self.grid

    def cache_shape(self, batch: int, frames: int) -> tuple[int, int, int, int, int]:
        """The shape of a `KVCache` tensor holding `frames` frames: `[B, layers, heads, T*N, Dh]`."""
        return (batch, self.cfg.depth, self.cfg.heads, frames * self.tokens, self.cfg.dim // self.cfg.heads)

    def base(self, states: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """What the predicted change is added to: each state `[B, T, N, D]` itself, or warped by its
        latent `[B, T, Z]` when `world_model.warp` is set."""
        if self.warp_modulation is None:
            return states
        return warp_tokens(states, self.warp_modulation(latents), self.grid)

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
        return self.base(states, latents) + self.proj_out(modulate(self.norm_out(x), shift, scale))  # [B, T, N, D]

    def next_state(self, states: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """One uncached step: context `[B, T, N, D]` and its latents `[B, T, Z]` (the last one is the
        action to apply) -> the next state ŝ_T `[B, N, D]`. Runs the whole context again."""
        return self(states, latents)[:, -1]

    def empty_cache(self, batch: int, frames: int, like: torch.Tensor) -> KVCache:
        """An uninitialised cache with room for `frames` frames (dtype and device of `like`), for
        `extend(..., buffer=)` to write into."""
        shape = self.cache_shape(batch, frames)
        return KVCache(like.new_empty(shape), like.new_empty(shape))

    def extend(
        self, cache: KVCache | None, states: torch.Tensor, latents: torch.Tensor, *, buffer: KVCache | None = None
    ) -> tuple[torch.Tensor, KVCache]:
        """`forward` on (cached frames + new frames), computing only the new frames.

        states `[B, T, N, D]`, latents `[B, T, Z]` -> (predictions `[B, T, N, D]`, output t being the
        prediction after new frame t; the cache extended by the T frames). The new frames take the
        time indices P..P+T-1 (P cached frames) in RoPE, as they would in the whole context.

        By default the extended cache is new tensors (the past is copied once: a pure function, as
        exported). With `buffer` (room for P+T frames, its first P frames being `cache`), the new
        frames are written into it in place and the result is a view of it: nothing is copied, but
        any other cache viewing the same frames of `buffer` is overwritten."""
        t, n = states.shape[1], states.shape[2]
        past = 0 if cache is None else cache.keys.shape[3] // n
        if past + t > self.cfg.max_steps:
            raise ValueError(
                f"context of {past + t} steps exceeds world_model.max_steps={self.cfg.max_steps}; "
                "slide the window (world_model.advance does)"
            )
        if buffer is not None and buffer.keys.shape[3] < (past + t) * n:
            raise ValueError(f"the buffer holds {buffer.keys.shape[3] // n} frames; {past + t} needed")
        start, length = past * n, t * n
        rope = (self.rope_cos[start : start + length], self.rope_sin[start : start + length])  # [T*N, Dh]
        # One new frame may see every cached token and its own: no mask. Several new frames are
        # block-causal among themselves and all see the cache.
        mask = block_causal_mask(past + t, n, device=states.device)[start:] if t > 1 else None  # [T*N, (P+T)*N]
        x = self.proj_in(states)  # [B, T, N, Dw]
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            past_k = None if cache is None else cache.keys[:, i]  # [B, H, P*N, Dh]
            past_v = None if cache is None else cache.values[:, i]
            buffers = None if buffer is None else (buffer.keys[:, i], buffer.values[:, i])
            x, k, v = block.forward_cached(x, latents, past_k, past_v, mask, rope, buffers)
            keys.append(k)
            values.append(v)
        shift, scale = self.final_modulation(latents)[:, :, None, :].chunk(2, dim=-1)
        predictions = self.base(states, latents) + self.proj_out(modulate(self.norm_out(x), shift, scale))  # [B, T, N, D]
        if buffer is not None:
            end = start + length
            return predictions, KVCache(buffer.keys[:, :, :, :end], buffer.values[:, :, :, :end])
        return predictions, KVCache(torch.stack(keys, dim=1), torch.stack(values, dim=1))

    def prefill(self, states: torch.Tensor, latents: torch.Tensor) -> tuple[torch.Tensor, KVCache]:
        """Start a cached rollout. states `[B, T, N, D]` (s_0..s_{T-1}), latents `[B, T, Z]`
        (z_0..z_{T-1}, the last one applied to s_{T-1}) -> (ŝ_T `[B, N, D]`, the cache of T frames).

        A frame enters the cache only together with its latent (its keys and values depend on it
        through the frame's AdaLN modulation): to start from T observed states and the T-1 latents
        between them, pass the first action as the T-th latent (`start_context` does)."""
        predictions, cache = self.extend(None, states, latents)
        return predictions[:, -1], cache

    def step(self, cache: KVCache, state: torch.Tensor, latent: torch.Tensor) -> tuple[torch.Tensor, KVCache]:
        """One cached step: the cache of frames 0..T-1, the newest state s_T `[B, N, D]` and the
        latent applied to it `[B, Z]` -> (ŝ_{T+1} `[B, N, D]`, the cache of frames 0..T).
        Equal to `next_state` on the whole context, at the cost of one frame."""
        if not isinstance(cache, KVCache):
            raise TypeError(
                f"step takes a KVCache first (from prefill), got {type(cache).__name__}; "
                "for one uncached call on a whole context use next_state(states, latents)"
            )
        predictions, cache = self.extend(cache, state[:, None], latent[:, None])
        return predictions[:, 0], cache


@dataclass(frozen=True)
class RolloutContext:
    """What a cached rollout carries from step to step: the cache and the frames in it.

    `cache` views the first `frames` frames of `buffer`, which has room for more: a step writes the
    new frame after them in place instead of copying the whole cache (the copy cost as much as the
    step's compute on a CPU). `tip` (shared by every context of one buffer) is how many frames
    have been written into the buffer: a context whose frames end below the tip was already
    advanced, so advancing it again (branching) copies its frames to a buffer of its own first.
    `states` `[B, N, D]` and `latents` `[B, Z]` of the cached frames are kept (as references) so
    the window can slide once it holds `max_steps` frames (see `advance`)."""

    cache: KVCache
    states: tuple[torch.Tensor, ...]
    latents: tuple[torch.Tensor, ...]
    buffer: KVCache
    tip: list[int] = field(compare=False)

    @property
    def frames(self) -> int:
        return len(self.states)

    @property
    def capacity(self) -> int:
        return self.buffer.keys.shape[3] // (self.cache.keys.shape[3] // self.frames)


def _prefill_context(
    model: WorldModel, states: torch.Tensor, latents: torch.Tensor, room: int
) -> tuple[torch.Tensor, RolloutContext]:
    """Prefill `states` `[B, T, N, D]` / `latents` `[B, T, Z]` into a buffer with `room` more frames."""
    t = states.shape[1]
    buffer = model.empty_cache(states.shape[0], min(model.cfg.max_steps, t + room), states)
    predictions, cache = model.extend(None, states, latents, buffer=buffer)
    return predictions[:, -1], RolloutContext(cache, tuple(states.unbind(1)), tuple(latents.unbind(1)), buffer, [t])


def advance(
    model: WorldModel,
    context: RolloutContext | None,
    state: torch.Tensor,  # [B, N, D] the newest state
    latent: torch.Tensor,  # [B, Z] the latent applied to it
) -> tuple[torch.Tensor, RolloutContext]:
    """One autoregressive step: ŝ `[B, N, D]` from `state` and every earlier frame, and the context
    with `state` added (`context=None` starts from `state` alone).

    Matches the uncached rollout exactly, window included. While the frames fit in `max_steps`
    this is one cached step, appending to the context's buffer (grown by doubling, so copies stay
    amortised O(1) per step). Once the window is full it slides: the oldest frame leaves, which
    changes every remaining frame's keys and values (they attended to it), so the window is
    prefilled afresh and a step then costs as much as an uncached one."""
    if context is None:
        return _prefill_context(model, state[:, None], latent[:, None], room=1)
    states, latents = (*context.states, state), (*context.latents, latent)
    if context.frames >= model.cfg.max_steps:
        return _prefill_context(model, torch.stack(states[1:], dim=1), torch.stack(latents[1:], dim=1), room=0)
    buffer, tip, cache = context.buffer, context.tip, context.cache
    if tip[0] != context.frames or context.capacity <= context.frames:
        # branching from an advanced context, or a full buffer: frames to a buffer of their own
        room = min(model.cfg.max_steps, max(2 * context.frames, context.frames + 1))
        buffer = model.empty_cache(state.shape[0], room, state)
        end = cache.keys.shape[3]
        buffer.keys[:, :, :, :end] = cache.keys
        buffer.values[:, :, :, :end] = cache.values
        tip = [context.frames]
    predictions, cache = model.extend(cache, state[:, None], latent[:, None], buffer=buffer)
    tip[0] = context.frames + 1
    return predictions[:, 0], RolloutContext(cache, states, latents, buffer, tip)


def start_context(
    model: WorldModel,
    context: torch.Tensor,  # [B, T0, N, D] observed states
    context_latents: torch.Tensor,  # [B, T0-1, Z] the latents between them
    action: torch.Tensor,  # [B, Z] the first latent, applied to the last observed state
) -> tuple[torch.Tensor, RolloutContext]:
    """Prefill from observed states: ŝ_{T0} `[B, N, D]` and the context of the last `max_steps`
    observed frames."""
    window = model.cfg.max_steps
    latents = torch.cat([context_latents, action[:, None]], dim=1)[:, -window:]  # [B, T, Z]
    states = context[:, -window:]  # [B, T, N, D]
    return _prefill_context(model, states, latents, room=states.shape[1])


def autoregressive_rollout(
    model: WorldModel,
    context: torch.Tensor,  # [B, T0, N, D] observed states
    context_latents: torch.Tensor,  # [B, T0-1, Z] latents between the observed states
    actions: torch.Tensor,  # [B, H, Z] latents to apply from the last observed state on
    *,
    cached: bool = True,
) -> torch.Tensor:
    """Autoregressive rollout: returns the predicted states `[B, H, N, D]`.

    The context window slides once it reaches `max_steps` so arbitrarily long rollouts work.
    `cached=False` re-runs the whole window at every step (the reference the cache is tested
    against); both give the same states up to float rounding.
    """
    if actions.shape[1] == 0:
        return context.new_zeros(context.shape[0], 0, *context.shape[2:])
    if cached:
        nxt, ctx = start_context(model, context, context_latents, actions[:, 0])
        outputs = [nxt]
        for h in range(1, actions.shape[1]):
            nxt, ctx = advance(model, ctx, nxt, actions[:, h])
            outputs.append(nxt)
        return torch.stack(outputs, dim=1)
    states, latents, outputs = context, context_latents, []
    max_steps = model.cfg.max_steps
    for h in range(actions.shape[1]):
        latents = torch.cat([latents, actions[:, h : h + 1]], dim=1)  # [B, T, Z]
        states, latents = states[:, -max_steps:], latents[:, -max_steps:]
        nxt = model.next_state(states, latents)  # [B, N, D]
        outputs.append(nxt)
        states = torch.cat([states, nxt[:, None]], dim=1)
    return torch.stack(outputs, dim=1)


def teacher_forced_loss(
    model: WorldModel, states: torch.Tensor, latents: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """L1 next-state loss. states `[B, T, N, D]`, latents `[B, T-1, Z]` -> (loss, predictions `[B, T-1, N, D]`)."""
    predictions = model(states[:, :-1], latents)
    return F.l1_loss(predictions, states[:, 1:]), predictions
