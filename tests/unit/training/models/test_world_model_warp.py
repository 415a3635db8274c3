"""`world_model.warp`: the latent's affine map of the token grid (`warp_tokens`)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from training.config import WorldModelConfig
from training.models.world_model import WorldModel, warp_frames, warp_tokens

G, D, Z = 4, 3, 8
N = G * G


def grid_states(batch: int = 1, steps: int = 1) -> torch.Tensor:
    """Token (row r, column c) holds (r, c, 10r + c), so where a value came from can be read off."""
    r, c = torch.meshgrid(torch.arange(G), torch.arange(G), indexing="ij")
    tokens = torch.stack([r, c, 10 * r + c], dim=-1).float().reshape(N, D)
    return tokens.expand(batch, steps, N, D).clone()


def affine(a: float = 0, b: float = 0, c: float = 0, d: float = 0, tx: float = 0, ty: float = 0) -> torch.Tensor:
    return torch.tensor([[[a, b, c, d, tx, ty]]])  # [1, 1, 6]


def test_zero_is_the_identity() -> None:
    states = torch.randn(2, 3, N, D)
    assert torch.equal(warp_tokens(states, torch.zeros(2, 3, 6), G), states)


@pytest.mark.parametrize(("tx", "ty"), [(1, 0), (-2, 0), (0, 1), (1, -1)])
def test_a_whole_token_shift_moves_the_grid_and_repeats_the_border(tx: int, ty: int) -> None:
    out = warp_tokens(grid_states(), affine(tx=tx, ty=ty), G).reshape(G, G, D)
    for r in range(G):
        for c in range(G):
            src_r, src_c = min(max(r + ty, 0), G - 1), min(max(c + tx, 0), G - 1)
            assert out[r, c].tolist() == [src_r, src_c, 10 * src_r + src_c]


def test_a_fractional_shift_interpolates_between_neighbours() -> None:
    out = warp_tokens(grid_states(), affine(tx=0.25), G).reshape(G, G, D)
    assert out[0, 0, 1].item() == pytest.approx(0.25)  # column 0.25 of the way to column 1
    assert out[2, 1, 2].item() == pytest.approx(21.25)
    assert out[2, G - 1, 1].item() == pytest.approx(G - 1)  # past the edge: the border column


def test_a_zoom_about_the_centre_keeps_the_centre_and_spreads_the_rest() -> None:
    states = grid_states()
    out = warp_tokens(states, affine(a=-0.5, d=-0.5), G).reshape(G, G, D)  # sample at half the distance
    centre = (G - 1) / 2
    for r in range(G):
        for c in range(G):
            assert out[r, c, 0].item() == pytest.approx(centre + (r - centre) / 2)
            assert out[r, c, 1].item() == pytest.approx(centre + (c - centre) / 2)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_the_warp_has_a_gradient_at_the_identity_where_training_starts(seed: int) -> None:
    """A hat kernel relu(1-|x-k|) has zero gradient at integer positions: the warp would never move."""
    gen = torch.Generator().manual_seed(seed)
    states = torch.randn(1, 1, N, D, generator=gen)
    theta = torch.zeros(1, 1, 6, requires_grad=True)
    (warp_tokens(states, theta, G) * torch.randn(1, 1, N, D, generator=gen)).sum().backward()
    assert theta.grad is not None and theta.grad[..., 4:].abs().sum() > 0  # the shift can learn


def warp_model(seed: int = 0, perturb: bool = True) -> WorldModel:
    torch.manual_seed(seed)
    model = WorldModel(WorldModelConfig(dim=16, depth=2, heads=2, max_steps=8, warp=True), D, G, Z).eval()
    if perturb:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    return model


def test_at_init_the_warp_model_predicts_the_copy_baseline_whatever_the_latent() -> None:
    model = warp_model(perturb=False)
    states = torch.randn(2, 5, N, D)
    assert torch.equal(model(states, torch.randn(2, 5, Z)), states)


@torch.no_grad()
def test_the_latent_moves_the_base_and_the_cache_still_equals_the_whole_context() -> None:
    model = warp_model()
    gen = torch.Generator().manual_seed(1)
    states, latents = torch.randn(2, 6, N, D, generator=gen), torch.randn(2, 6, Z, generator=gen)
    assert not torch.allclose(model.base(states, latents), states, atol=1e-3)  # the latent warps the state
    expected = model(states, latents)
    nxt, cache = model.prefill(states[:, :2], latents[:, :2])
    assert (nxt - expected[:, 1]).abs().max() <= 1e-5
    for t in range(2, 6):
        nxt, cache = model.step(cache, states[:, t], latents[:, t])
        assert (nxt - expected[:, t]).abs().max() <= 1e-5


def test_without_warp_the_model_has_no_warp_weights_so_older_checkpoints_load() -> None:
    model = WorldModel(WorldModelConfig(dim=16, depth=1, heads=2), D, G, Z)
    assert model.warp_modulation is None
    assert not any("warp" in k for k in model.state_dict())


def test_the_warp_term_is_the_l1_of_the_latents_warp_alone() -> None:
    from tests.unit.exporters.tiny import tiny_model_config
    from training.models.lam import LatentActionModel

    torch.manual_seed(0)
    cfg = tiny_model_config(**{"model.world_model.warp": True, "model.world_model.warp_init": 0.2})
    lam = LatentActionModel(cfg)
    states = torch.randn(2, 4, lam.encoder.grid ** 2, lam.encoder.dim)
    torch.manual_seed(1)
    plain = lam.lam_loss(states)
    torch.manual_seed(1)  # the same regulariser noise
    warped = lam.lam_loss(states, warp_weight=2.0)
    expected = (lam.world_model.base(states[:, :-1], warped.latents) - states[:, 1:]).abs().mean()
    assert warped.stats["warp_l1"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert warped.loss.item() == pytest.approx(plain.loss.item() + 2.0 * expected.item(), rel=1e-5)
    assert "warp_l1" not in plain.stats
    with pytest.raises(ValueError, match="needs a warping world model"):
        LatentActionModel(tiny_model_config()).lam_loss(states, warp_weight=1.0)


def test_a_random_warp_head_warps_from_the_first_step_and_zero_latents_keep_the_identity() -> None:
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(dim=16, depth=1, heads=2, warp=True, warp_init=0.2), D, G, Z)
    states = torch.randn(1, 2, N, D)
    assert not torch.allclose(model.base(states, torch.randn(1, 2, Z)), states, atol=1e-3)
    assert torch.equal(model.base(states, torch.zeros(1, 2, Z)), states)


@pytest.mark.parametrize("affine_row", [[0, 0, 0, 0, 1.0, 0], [0, 0, 0, 0, 0, -2.0], [0, 0, 0, 0, -1.0, 1.0]])
def test_the_pixel_warp_is_the_token_warp_on_frames_of_flat_tokens(affine_row: list[float]) -> None:
    """A frame whose every token is a flat block: the pixel warp read at the tokens' centres equals
    the token warp for whole-token shifts."""
    p = 4
    tokens = torch.randn(1, 1, N, 3)
    frame = tokens.reshape(1, 1, G, G, 3).permute(0, 1, 4, 2, 3).repeat_interleave(p, 3).repeat_interleave(p, 4)
    theta = torch.tensor([[affine_row]])
    by_tokens = warp_tokens(tokens, theta, G).reshape(1, 1, G, G, 3).permute(0, 1, 4, 2, 3)
    by_pixels = warp_frames(frame, theta, G)[..., p // 2 :: p, p // 2 :: p]  # [1, 1, 3, G, G]
    assert torch.allclose(by_pixels, by_tokens, atol=1e-6)


def test_a_fractional_pixel_warp_moves_a_ramp_by_the_same_fraction_of_a_token() -> None:
    """On a horizontal ramp (value = the column, in tokens) both warps interpolate exactly: a shift of
    0.25 tokens reads 0.25 further along, away from the last column (where the border repeats)."""
    p = 8
    ramp = (torch.arange(G * p) + 0.5) / p - 0.5  # pixel u -> its position in tokens
    frame = ramp.expand(1, 1, 1, G * p, G * p).clone()
    tokens = torch.arange(G).float().repeat(G).reshape(1, 1, N, 1)  # column index of each token
    theta = affine(tx=0.25)
    moved = warp_frames(frame, theta, G) - frame  # [1, 1, 1, H, W]: how far along the ramp each pixel now reads
    by_tokens = warp_tokens(tokens, theta, G).reshape(G, G) - tokens.reshape(G, G)
    assert torch.allclose(moved[..., : (G - 1) * p], torch.tensor(0.25), atol=1e-5)
    assert torch.allclose(by_tokens[:, : G - 1], torch.tensor(0.25), atol=1e-5)


def test_the_motion_prior_is_the_l1_of_the_warps_translation_against_minus_the_shift() -> None:
    from tests.unit.exporters.tiny import tiny_model_config
    from training.models.lam import LatentActionModel

    torch.manual_seed(0)
    lam = LatentActionModel(tiny_model_config(**{"model.world_model.warp": True, "model.world_model.warp_init": 0.2}))
    states = torch.randn(2, 4, lam.encoder.grid ** 2, lam.encoder.dim)
    shift = torch.randn(2, 3, 2)  # the content's measured shift per step, tokens
    torch.manual_seed(1)
    plain = lam.lam_loss(states)
    torch.manual_seed(1)
    primed = lam.lam_loss(states, motion_shift=shift, motion_weight=0.5)
    translation = lam.world_model.warp_modulation(primed.latents)[..., 4:]
    expected = (translation + shift).abs().mean()
    assert primed.stats["motion_prior_l1"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert primed.loss.item() == pytest.approx(plain.loss.item() + 0.5 * expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="needs the measured motion_shift"):
        lam.lam_loss(states, motion_weight=1.0)
    with pytest.raises(ValueError, match="needs a warping world model"):
        LatentActionModel(tiny_model_config()).lam_loss(states, motion_shift=shift, motion_weight=1.0)


def test_the_motion_prior_alone_teaches_the_warp_to_translate_against_the_content() -> None:
    """Trained with a heavy prior, the warp's translation follows minus the measured shift: the warp
    reads each cell from where its content was."""
    from tests.unit.exporters.tiny import tiny_model_config
    from training.models.lam import LatentActionModel

    torch.manual_seed(0)
    lam = LatentActionModel(tiny_model_config(**{"model.world_model.warp": True, "model.world_model.warp_init": 0.2}))
    states = torch.randn(8, 2, lam.encoder.grid ** 2, lam.encoder.dim)
    shift = torch.randn(8, 1, 2) * 0.5
    opt = torch.optim.Adam([*lam.idm.parameters(), *lam.world_model.warp_modulation.parameters()], lr=3e-3)
    for _ in range(300):
        loss = lam.lam_loss(states, motion_shift=shift, motion_weight=20.0).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        translation = lam.world_model.warp_modulation(lam.latent_actions(states))[..., 4:]
    assert (translation + shift).abs().mean() < 0.1 * shift.abs().mean()


@settings(max_examples=25, deadline=None)
@given(tx=st.floats(-2, 2), ty=st.floats(-2, 2), dx=st.floats(-2, 2), dy=st.floats(-2, 2))
def test_the_similarity_prior_without_a_zoom_is_the_translation_prior(tx: float, ty: float, dx: float, dy: float) -> None:
    from training.models.lam import motion_prior_l1

    warp = affine(tx=tx, ty=ty).double()  # [1, 1, 6]
    unscaled = torch.tensor([[[dx, dy, 0.0]]], dtype=torch.float64)
    assert motion_prior_l1(warp, unscaled, G).item() == pytest.approx(
        motion_prior_l1(warp, unscaled[..., :2], G).item(), rel=1e-9, abs=1e-12)


def test_the_warp_the_similarity_prior_asks_for_undoes_the_zoom() -> None:
    """Content at p lies at e^σ·(p + u) in the next state: the warp at the prior's target (a = d =
    e^-σ - 1, translation -u) reads every cell of the next state from where its content was, and the
    prior is zero there and positive elsewhere."""
    from training.models.lam import motion_prior_l1

    sigma, u = 0.1, (0.3, -0.2)
    centre = (G - 1) / 2
    axis = torch.arange(G, dtype=torch.float64) - centre
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    position = torch.stack([x, y], -1).reshape(1, 1, N, 2)  # a state whose tokens are their own position
    moved = position.clone()  # what the next state holds at each cell: the position its content came from
    moved[..., 0] = x.reshape(-1) / math.exp(sigma) - u[0]
    moved[..., 1] = y.reshape(-1) / math.exp(sigma) - u[1]
    scale = math.exp(-sigma) - 1
    target = torch.tensor([[[scale, 0.0, 0.0, scale, -u[0], -u[1]]]], dtype=torch.float64)
    warped = warp_tokens(position, target, G)
    inside = (moved.abs() <= centre).all(-1)  # cells whose source lies on the grid (the border repeats)
    assert torch.allclose(warped[inside], moved[inside], atol=1e-9)
    motion = torch.tensor([[[u[0], u[1], sigma]]], dtype=torch.float64)
    assert motion_prior_l1(target, motion, G).item() == pytest.approx(0.0, abs=1e-12)
    translation_only = target.clone()
    translation_only[..., [0, 3]] = 0
    assert motion_prior_l1(translation_only, motion, G).item() > 0.05  # the zoom is not left out
    with pytest.raises(ValueError, match="2 .shift. or 3"):
        motion_prior_l1(target, torch.zeros(1, 1, 4, dtype=torch.float64), G)
