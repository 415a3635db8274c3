"""Controller variants: shapes, what they look at, and the L2 target."""

import pytest
import torch

from training.models.controller import (
    ControllerConfig,
    MlpController,
    StateController,
    build_controller,
    controller_loss,
)


def test_state_controller_maps_actions_and_states_to_latents() -> None:
    torch.manual_seed(0)
    ctrl = StateController(ControllerConfig(action_dim=4, dim=32, heads=2), latent_dim=16, state_dim=8, grid=2).eval()
    actions, states = torch.randn(3, 5, 4), torch.randn(3, 5, 4, 8)
    z = ctrl(actions, states)
    assert z.shape == (3, 5, 16)
    other_state = states.clone()
    other_state[:, 2] += 1
    z2 = ctrl(actions, other_state)
    assert not torch.allclose(z2[:, 2], z[:, 2])  # the latent depends on the state the action starts from
    assert torch.allclose(z2[:, [0, 1, 3, 4]], z[:, [0, 1, 3, 4]], atol=1e-6)  # and on no other step's
    with pytest.raises(ValueError, match="needs the state"):
        ctrl(actions)


def test_mlp_controller_ignores_the_state() -> None:
    ctrl = build_controller(ControllerConfig(kind="mlp", action_dim=3, dim=16), latent_dim=8, state_dim=8, grid=2)
    assert isinstance(ctrl, MlpController)
    actions = torch.randn(2, 4, 3)
    assert torch.equal(ctrl(actions, torch.randn(2, 4, 4, 8)), ctrl(actions, None))


def test_controller_loss_is_l2_to_a_detached_target() -> None:
    predicted = torch.tensor([[[1.0, 2.0]], [[0.0, 0.0]]], requires_grad=True)
    target = torch.tensor([[[0.0, 0.0]], [[3.0, 4.0]]], requires_grad=True)
    loss = controller_loss(predicted, target)
    assert loss.item() == pytest.approx((5.0 + 25.0) / 2)
    loss.backward()
    assert target.grad is None  # the IDM is frozen: no gradient reaches its latents


def test_action_dimension_is_validated() -> None:
    with pytest.raises(ValueError, match="action_dim"):
        ControllerConfig(action_dim=0)
