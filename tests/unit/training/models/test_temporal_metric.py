"""The temporal ranking of state distances (the encoder's planning-cost objective)."""

import torch

from training.models.temporal_metric import temporal_ranking_loss


def test_states_that_drift_with_time_rank_perfectly() -> None:
    torch.manual_seed(0)
    direction = torch.randn(4, 8)
    drifting = (torch.arange(6.0)[:, None, None] * direction)[None]  # [1, S, N, D], moving away at a constant rate
    loss, accuracy = temporal_ranking_loss(drifting)
    assert accuracy == 1.0
    shuffled = drifting[:, torch.tensor([0, 5, 1, 4, 2, 3])]  # the same states out of order
    worse, worse_accuracy = temporal_ranking_loss(shuffled)
    assert worse_accuracy < 0.8 and worse > loss


def test_ranking_loss_has_gradients_and_ignores_scale() -> None:
    states = torch.randn(2, 5, 4, 8, requires_grad=True)
    loss, _ = temporal_ranking_loss(states)
    loss.backward()
    assert states.grad.abs().sum() > 0
    scaled, _ = temporal_ranking_loss(states.detach() * 3.0)
    assert torch.allclose(scaled, loss.detach(), atol=1e-5)  # log distances: scale-free
