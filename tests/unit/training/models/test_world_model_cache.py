"""The world model's key/value cache: `prefill` + `step` equal the uncached model, frame by frame."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from training.config import WorldModelConfig
from training.models.world_model import KVCache, WorldModel, advance, autoregressive_rollout

G, D, Z, MAX_STEPS = 3, 16, 8, 8
N = G * G
TOL = 1e-5


def random_model(seed: int, depth: int = 2, heads: int = 4, dim: int = 32) -> WorldModel:
    """Every weight perturbed, so no block is the zero-initialised identity."""
    torch.manual_seed(seed)
    cfg = WorldModelConfig(dim=dim, depth=depth, heads=heads, max_steps=MAX_STEPS)
    model = WorldModel(cfg, state_dim=D, grid=G, latent_dim=Z).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def inputs(seed: int, batch: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    states = torch.nn.functional.layer_norm(torch.randn(batch, steps, N, D, generator=gen), (D,))
    return states, torch.randn(batch, steps, Z, generator=gen)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    batch=st.integers(1, 3),
    prefix=st.integers(1, MAX_STEPS),
    depth=st.integers(1, 3),
    heads=st.sampled_from([1, 2, 4]),
)
@torch.no_grad()
def test_prefill_then_steps_equal_the_whole_context_at_every_frame(
    seed: int, batch: int, prefix: int, depth: int, heads: int
) -> None:
    model = random_model(seed, depth, heads)
    states, latents = inputs(seed, batch, MAX_STEPS)
    expected = model(states, latents)  # [B, S, N, D]: teacher-forced predictions of the whole context
    nxt, cache = model.prefill(states[:, :prefix], latents[:, :prefix])
    assert max_err(nxt, expected[:, prefix - 1]) <= TOL
    for t in range(prefix, MAX_STEPS):
        assert cache.keys.shape == model.cache_shape(batch, t) == cache.values.shape
        nxt, cache = model.step(cache, states[:, t], latents[:, t])
        assert max_err(nxt, expected[:, t]) <= TOL, f"frame {t} after a prefill of {prefix}"
    assert cache.frames(N) == MAX_STEPS


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    batch=st.integers(1, 3),
    observed=st.integers(1, MAX_STEPS + 2),
    horizon=st.integers(1, 2 * MAX_STEPS),
)
@torch.no_grad()
def test_cached_rollout_equals_the_rerun_everything_rollout_window_slide_included(
    seed: int, batch: int, observed: int, horizon: int
) -> None:
    model = random_model(seed)
    context, context_latents = inputs(seed, batch, observed)
    actions = torch.randn(batch, horizon, Z, generator=torch.Generator().manual_seed(seed + 1))
    reference = autoregressive_rollout(model, context, context_latents[:, :-1], actions, cached=False)
    cached = autoregressive_rollout(model, context, context_latents[:, :-1], actions)
    assert cached.shape == reference.shape == (batch, horizon, N, D)
    assert max_err(cached, reference) <= TOL


@torch.no_grad()
def test_the_new_frame_takes_the_next_time_index_in_rope() -> None:
    """A cache whose frame is placed at the wrong time index gives another prediction: the parity
    above could not hold by accident of a position-free model."""
    model = random_model(0)
    states, latents = inputs(0, 2, 3)
    expected = model(states, latents)[:, -1]
    _, cache = model.prefill(states[:, :2], latents[:, :2])
    right, _ = model.step(cache, states[:, 2], latents[:, 2])
    shifted_cos, shifted_sin = model.rope_cos.clone(), model.rope_sin.clone()
    model.rope_cos[2 * N : 3 * N], model.rope_sin[2 * N : 3 * N] = model.rope_cos[3 * N : 4 * N], model.rope_sin[3 * N : 4 * N]
    wrong, _ = model.step(cache, states[:, 2], latents[:, 2])
    model.rope_cos.copy_(shifted_cos)
    model.rope_sin.copy_(shifted_sin)
    assert max_err(right, expected) <= TOL
    assert max_err(wrong, expected) > 1e-3


@torch.no_grad()
def test_a_frames_latent_conditions_only_that_frame_and_later() -> None:
    """AdaLN frame by frame: a later latent cannot reach into cached frames."""
    model = random_model(1)
    states, latents = inputs(1, 2, 4)
    _, cache = model.prefill(states[:, :3], latents[:, :3])
    a, cache_a = model.step(cache, states[:, 3], latents[:, 3])
    b, cache_b = model.step(cache, states[:, 3], latents[:, 3] + 1.0)
    assert torch.equal(cache_a.keys[..., : 3 * N, :], cache_b.keys[..., : 3 * N, :])
    assert max_err(a, b) > 1e-3


@torch.no_grad()
def test_a_step_costs_one_frame_plus_attention_linear_in_the_context() -> None:
    """FLOPs, not time: the uncached step re-runs the context (quadratic over a rollout); the cached
    step grows by the same amount for every extra frame of context."""
    model = random_model(2)
    states, latents = inputs(2, 4, MAX_STEPS)

    def flops(fn: object) -> int:
        # the math backend spells attention as matmuls, which the counter sees (fused kernels it may not)
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            fn()  # type: ignore[operator]
        return counter.get_total_flops()

    cached, uncached = [], []
    for t in range(1, MAX_STEPS):
        _, cache = model.prefill(states[:, :t], latents[:, :t])
        cached.append(flops(lambda cache=cache, t=t: model.step(cache, states[:, t], latents[:, t])))
        uncached.append(flops(lambda t=t: model.next_state(states[:, : t + 1], latents[:, : t + 1])))
    increments = {b - a for a, b in zip(cached, cached[1:], strict=False)}
    assert len(increments) == 1 and increments.pop() > 0  # exactly linear in the context
    assert uncached[-1] > 5 * cached[-1]  # 8 frames re-run vs one frame attending to 8
    assert cached[0] == pytest.approx(uncached[0] / 2, rel=0.3)  # at 2 frames: about half


@torch.no_grad()
def test_cache_rows_can_be_selected_and_the_window_checked() -> None:
    model = random_model(3)
    states, latents = inputs(3, 3, MAX_STEPS)
    _, cache = model.prefill(states, latents)
    picked = cache.select(torch.tensor([2, 0]))
    assert torch.equal(picked.keys[0], cache.keys[2]) and torch.equal(picked.values[1], cache.values[0])
    with pytest.raises(ValueError, match="exceeds world_model.max_steps=8"):
        model.step(cache, states[:, 0], latents[:, 0])
    with pytest.raises(TypeError, match="next_state"):
        model.step(states, states[:, 0], latents[:, 0])  # type: ignore[arg-type]
    # advance slides the full window instead, and says so by keeping max_steps frames
    nxt, ctx = advance(model, None, states[:, 0], latents[:, 0])
    for t in range(1, MAX_STEPS + 3):
        nxt, ctx = advance(model, ctx, nxt, latents[:, t % MAX_STEPS])
    assert ctx.frames == MAX_STEPS and ctx.cache.frames(N) == MAX_STEPS
    assert isinstance(ctx.cache, KVCache)


@torch.no_grad()
def test_advancing_one_context_twice_branches_without_overwriting_the_other_branch() -> None:
    """`advance` appends into a shared buffer in place; a second continuation of the same context
    must get a buffer of its own rather than overwrite the first continuation's frame."""
    model = random_model(4)
    states, latents = inputs(4, 2, 4)
    _, ctx = advance(model, None, states[:, 0], latents[:, 0])
    _, ctx = advance(model, ctx, states[:, 1], latents[:, 1])  # 2 frames in a buffer of 2: next grows it
    _, ctx = advance(model, ctx, states[:, 2], latents[:, 2])  # in a buffer of 4 with room for 1 more
    first, first_ctx = advance(model, ctx, states[:, 3], latents[:, 3])
    kept = first_ctx.cache.keys.clone()
    second, second_ctx = advance(model, ctx, states[:, 3], latents[:, 3] + 1.0)  # branch from the same context
    assert torch.equal(first_ctx.cache.keys, kept)  # untouched by the branch
    assert second_ctx.buffer.keys.data_ptr() != first_ctx.buffer.keys.data_ptr()
    expected = model(states, latents)[:, -1]
    assert max_err(first, expected) <= TOL and max_err(second, expected) > 1e-3
    # each continues correctly: one more step from either matches the uncached model
    more = torch.randn(2, Z)
    for branch, z3 in ((first_ctx, latents[:, 3]), (second_ctx, latents[:, 3] + 1.0)):
        nxt, _ = advance(model, branch, states[:, 0], more)
        ref = model(torch.cat([states, states[:, :1]], 1), torch.cat([latents[:, :3], z3[:, None], more[:, None]], 1))
        assert max_err(nxt, ref[:, -1]) <= TOL
