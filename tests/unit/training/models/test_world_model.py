"""World-model properties: block-causal mask, causality, AdaLN-zero identity at init, RoPE."""

import torch

from training.config import WorldModelConfig
from training.models.modules import apply_rope, block_causal_mask, grid_positions, rope_tables
from training.models.world_model import WorldModel, autoregressive_rollout, teacher_forced_loss

B, T, G, D, Z = 2, 5, 3, 16, 8


def trained_like_model(seed: int = 0) -> WorldModel:
    """A world model with random (non-zero) modulation, as after training."""
    torch.manual_seed(seed)
    model = WorldModel(WorldModelConfig(dim=32, depth=2, heads=4, max_steps=8), state_dim=D, grid=G, latent_dim=Z).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_block_causal_mask_is_a_pure_function_of_steps() -> None:
    mask = block_causal_mask(3, 2)
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


def test_changing_a_future_state_leaves_earlier_predictions_unchanged() -> None:
    model = trained_like_model()
    states, latents = torch.randn(B, T, G * G, D), torch.randn(B, T, Z)
    base = model(states, latents)
    changed = states.clone()
    changed[:, 3] += 5.0
    out = model(changed, latents)
    assert torch.allclose(out[:, :3], base[:, :3], atol=1e-6)
    assert not torch.allclose(out[:, 3:], base[:, 3:], atol=1e-3)  # the change does propagate forward


def test_changing_a_future_latent_leaves_earlier_predictions_unchanged() -> None:
    model = trained_like_model()
    states, latents = torch.randn(B, T, G * G, D), torch.randn(B, T, Z)
    base = model(states, latents)
    changed = latents.clone()
    changed[:, 2] = torch.randn(B, Z) * 3
    out = model(states, changed)
    assert torch.allclose(out[:, :2], base[:, :2], atol=1e-6)
    assert not torch.allclose(out[:, 2], base[:, 2], atol=1e-3)


def test_adaln_zero_blocks_are_identity_at_init() -> None:
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(dim=32, depth=3, heads=4), state_dim=D, grid=G, latent_dim=Z)
    x = torch.randn(B, T, G * G, 32)
    latents = torch.randn(B, T, Z)
    mask = block_causal_mask(T, G * G)
    rope = (model.rope_cos[: T * G * G], model.rope_sin[: T * G * G])
    for block in model.blocks:
        assert torch.equal(block(x, latents, mask, rope), x)
    # and so, at init, the latent cannot change the prediction
    states = torch.randn(B, T, G * G, D)
    assert torch.allclose(model(states, latents), model(states, torch.zeros_like(latents)))


def test_rope_preserves_norm_and_encodes_relative_position() -> None:
    positions = grid_positions(4, 2, 2).float()
    cos, sin = rope_tables(positions, head_dim=12)
    q = torch.randn(1, 1, 1, 12).expand(1, 1, positions.shape[0], 12)
    rotated = apply_rope(q, cos, sin, axes=3)
    assert torch.allclose(rotated.norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    # <R(p) q, R(p') k> depends only on p - p': shift both positions by the same offset
    k = torch.randn(1, 1, 1, 12)
    p1, p2 = torch.tensor([[1.0, 0.0, 1.0], [3.0, 1.0, 0.0]]), torch.tensor([[2.0, 1.0, 2.0], [4.0, 2.0, 1.0]])
    c1, s1 = rope_tables(p1, 12)
    c2, s2 = rope_tables(p2, 12)
    dot1 = (apply_rope(q[..., :1, :], c1[:1], s1[:1], 3) * apply_rope(k, c1[1:], s1[1:], 3)).sum()
    dot2 = (apply_rope(q[..., :1, :], c2[:1], s2[:1], 3) * apply_rope(k, c2[1:], s2[1:], 3)).sum()
    assert torch.allclose(dot1, dot2, atol=1e-5)


def test_teacher_forced_loss_targets_the_next_state() -> None:
    model = trained_like_model()
    states, latents = torch.randn(B, T, G * G, D), torch.randn(B, T - 1, Z)
    loss, predictions = teacher_forced_loss(model, states, latents)
    assert predictions.shape == (B, T - 1, G * G, D)
    assert torch.allclose(loss, (predictions - states[:, 1:]).abs().mean())


def test_rollout_first_step_equals_teacher_forced_prediction() -> None:
    model = trained_like_model()
    states, latents = torch.randn(B, T, G * G, D), torch.randn(B, T, Z)
    predicted = autoregressive_rollout(model, states, latents[:, : T - 1], torch.randn(B, 3, Z))
    assert predicted.shape == (B, 3, G * G, D)
    first = autoregressive_rollout(model, states, latents[:, : T - 1], latents[:, T - 1 :])[:, 0]
    assert torch.allclose(first, model(states, latents)[:, -1], atol=1e-6)
