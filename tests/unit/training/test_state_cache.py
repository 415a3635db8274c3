"""`train.lam.cache_clips`: the LAM stage's frozen states computed once and drawn in batches."""

from __future__ import annotations

import pytest
import torch

from tests.unit.training.models.test_lam_context import tiny_model
from training.loop import lam_stage_loss
from training.state_cache import StateBatch, StateCache, build_state_cache, encode_batch, token_shifts


def clips_of(video: torch.Tensor, batch: int):
    """Endless batches of `video`'s clips, in order, as the video loop's loader gives them."""
    while True:
        for i in range(0, len(video), batch):
            yield video[i : i + batch]


def test_every_clip_once_per_pass_in_a_new_order_each_pass() -> None:
    states = torch.arange(10).float().reshape(10, 1, 1, 1).expand(10, 3, 1, 1)  # clip i holds i
    cache = StateCache(states, None, seed=0)
    batches = cache.batches(5)
    passes = [[int(v) for b in (next(batches), next(batches)) for v in b.states[:, 0, 0, 0]] for _ in range(3)]
    assert all(sorted(p) == list(range(10)) for p in passes)
    assert len({tuple(p) for p in passes}) == 3  # reshuffled every pass
    assert passes[0] != list(range(10))


def test_the_same_seed_draws_the_same_batches() -> None:
    states = torch.randn(7, 3, 2, 4)
    first = [b.states for _, b in zip(range(4), StateCache(states, None, seed=3).batches(3), strict=False)]
    again = [b.states for _, b in zip(range(4), StateCache(states, None, seed=3).batches(3), strict=False)]
    other = [b.states for _, b in zip(range(4), StateCache(states, None, seed=4).batches(3), strict=False)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_shifts_travel_with_their_clip() -> None:
    states = torch.arange(6).float().reshape(6, 1, 1, 1).expand(6, 3, 1, 1)
    shifts = torch.arange(6).float().reshape(6, 1, 1).expand(6, 2, 2)  # clip i's shifts are all i
    for _, batch in zip(range(5), StateCache(states, shifts, seed=1).batches(4), strict=False):
        assert torch.equal(batch.states[:, 0, 0, 0], batch.shifts[:, 0, 0])


def test_a_batch_larger_than_the_cache_is_refused() -> None:
    with pytest.raises(ValueError, match="a batch of 4 clips needs at least that many cached clips, got 3"):
        next(StateCache(torch.zeros(3, 2, 1, 1), None, seed=0).batches(4))


def test_shifts_that_do_not_fit_the_states_are_refused() -> None:
    with pytest.raises(ValueError, match=r"shifts \(3, 3, 2\) do not fit states \(3, 3, 1, 1\)"):
        StateCache(torch.zeros(3, 3, 1, 1), torch.zeros(3, 3, 2), seed=0)


def test_the_cache_holds_the_encoder_states_of_the_first_clips() -> None:
    model = tiny_model()
    video = (torch.rand(5, 8, 3, 32, 32) * 255).to(torch.uint8)
    cache = build_state_cache(model, clips_of(video, 2), count=5, with_shifts=True, seed=0)
    assert len(cache) == 5 and cache.shifts is not None
    assert torch.allclose(cache.states, model.encode(video), atol=1e-6)
    assert torch.allclose(cache.shifts, token_shifts(model, video), atol=1e-6)
    assert cache.nbytes == cache.states.numel() * 4 + cache.shifts.numel() * 4
    partial = build_state_cache(model, clips_of(video, 2), count=3, with_shifts=False, seed=0)  # stops mid-batch
    assert partial.shifts is None and torch.allclose(partial.states, cache.states[:3], atol=1e-6)


def test_training_on_cached_states_is_training_on_the_clips() -> None:
    model = tiny_model()
    with torch.no_grad():
        for p in model.world_model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    video = (torch.rand(3, 8, 3, 32, 32) * 255).to(torch.uint8)
    cached = encode_batch(model, video, with_shifts=False)
    for context in ("full", "pairs"):
        from_video, _ = lam_stage_loss(model, video, context=context)
        from_cache, _ = lam_stage_loss(model, cached, context=context)
        assert torch.allclose(from_video, from_cache, atol=1e-6)


def test_the_motion_prior_needs_the_cached_shifts() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="the motion prior needs each step's measured shift"):
        lam_stage_loss(model, StateBatch(torch.zeros(2, 4, 4, 16)), motion_prior_weight=1.0)


def test_the_similarity_prior_caches_the_zoom_beside_the_shift_in_tokens() -> None:
    from training.config import EncoderConfig, IdmConfig, ModelConfig, RegularizerConfig, WorldModelConfig
    from training.models.lam import LatentActionModel
    from training.motion import state_similarity

    torch.manual_seed(0)
    model = LatentActionModel(ModelConfig(
        encoder=EncoderConfig(image_size=32, patch=16, tubelet=2, dim=16, depth=1, heads=2),
        idm=IdmConfig(dim=16, depth=1, heads=2, latent_dim=4),
        world_model=WorldModelConfig(dim=16, depth=1, heads=2, max_steps=4, warp=True, warp_init=0.2),
        regularizer=RegularizerConfig(kind="none"),
    )).eval()
    video = (torch.rand(3, 8, 3, 32, 32) * 255).to(torch.uint8)
    cache = build_state_cache(model, clips_of(video, 2), count=3, with_shifts=True, seed=0, similarity=True)
    measured = state_similarity(video, tubelet=2)  # [3, 3, 3]: pixels, pixels, log zoom
    assert cache.shifts is not None and cache.shifts.shape == (3, 3, 3)
    assert torch.allclose(cache.shifts[..., :2], measured[..., :2] * model.encoder.grid / 32, atol=1e-5)
    assert torch.allclose(cache.shifts[..., 2], measured[..., 2], atol=1e-6)  # a ratio: no unit to convert
    for context in ("full", "pairs"):
        from_video, stats = lam_stage_loss(model, video, context=context, motion_prior_weight=1.0, motion_prior="similarity")
        from_cache, _ = lam_stage_loss(model, StateBatch(cache.states, cache.shifts), context=context,
                                       motion_prior_weight=1.0, motion_prior="similarity")
        assert torch.allclose(from_video, from_cache, atol=1e-5) and stats["motion_prior_l1"] > 0
