"""`train.lam.context`: the LAM stage's world model predicts from the whole clip or from one-step pairs."""

from __future__ import annotations

import pytest
import torch

from training.config import EncoderConfig, IdmConfig, ModelConfig, RegularizerConfig, WorldModelConfig
from training.loop import lam_stage_loss
from training.models.lam import LatentActionModel, one_step_pairs


def tiny_model() -> LatentActionModel:
    torch.manual_seed(0)
    cfg = ModelConfig(
        encoder=EncoderConfig(image_size=32, patch=16, tubelet=2, dim=16, depth=1, heads=2),
        idm=IdmConfig(dim=16, depth=1, heads=2, latent_dim=4),
        world_model=WorldModelConfig(dim=16, depth=1, heads=2, max_steps=4),
        regularizer=RegularizerConfig(kind="none"),
    )
    return LatentActionModel(cfg).eval()


def test_pairs_are_consecutive_states_clip_by_clip() -> None:
    states = torch.arange(2 * 4).float().reshape(2, 4, 1, 1)  # clip b, step t holds 4b + t
    pairs = one_step_pairs(states)  # [2*3, 2, 1, 1]
    assert pairs.shape == (6, 2, 1, 1)
    assert pairs.flatten(1).tolist() == [[0, 1], [1, 2], [2, 3], [4, 5], [5, 6], [6, 7]]


def test_a_single_state_has_no_pairs() -> None:
    with pytest.raises(ValueError, match="at least 2 states, got 1"):
        one_step_pairs(torch.zeros(3, 1, 4, 8))


def test_the_pairs_context_is_the_loss_of_every_pair_on_its_own() -> None:
    model = tiny_model()
    with torch.no_grad():  # a trained world model: at init its output is the copy, whatever the context
        for p in model.world_model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    video = torch.rand(2, 8, 3, 32, 32)  # 4 states per clip
    states = model.encode(video)
    pairs_loss, pairs_stats = lam_stage_loss(model, video, context="pairs")
    assert torch.allclose(pairs_loss, model.lam_loss(one_step_pairs(states)).loss)
    full_loss, _ = lam_stage_loss(model, video, context="full")
    assert not torch.allclose(pairs_loss, full_loss)
    assert pairs_stats["z_batch_std"] > 0
