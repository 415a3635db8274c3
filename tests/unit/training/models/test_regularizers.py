"""The regularizers' formulas on hand-computed values, and VQ's gradient and code reset."""

import math

import pytest
import torch

from training.config import RegularizerConfig
from training.models.regularizers import NoisyRegularizer, SparseRegularizer, VectorQuantizer, energy, vcm


def test_energy_matches_hand_computation() -> None:
    # D = 4, √D = 2.  z1 = [1, 0, 0, 0]: ‖z‖² = 1 -> hinge 1; ‖z‖₁ = 1.  z2 = [1, 1, 1, -1]: ‖z‖² = 4 -> hinge 0; ‖z‖₁ = 4.
    z = torch.tensor([[1.0, 0, 0, 0], [1.0, 1, 1, -1]])
    e = energy(z, l2=1.0, l1=0.1)
    assert torch.allclose(e, torch.tensor([1.0 + 0.1, 0.0 + 0.4]))


def test_vcm_terms_match_hand_computation() -> None:
    # N = 2, D = 2. Columns: [1, 3] (mean 2, var 2) and [0, 0] (var 0).
    z = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    terms = vcm(z, var=0.1, cov=0.001, mean=0.1, eps=0.0)
    expected_var = 0.1 * (max(1 - math.sqrt(2.0), 0) + 1.0) / 2  # second column has std 0
    assert terms["variance"].item() == pytest.approx(expected_var)
    assert terms["covariance"].item() == pytest.approx(0.0)  # the constant column covaries with nothing
    assert terms["mean"].item() == pytest.approx(0.1 * abs((1 + 3 + 0 + 0) / 4))


def test_vcm_covariance_of_correlated_columns() -> None:
    z = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])  # cov matrix [[2, 2], [2, 2]]
    terms = vcm(z, var=0.1, cov=0.001, mean=0.1)
    assert terms["covariance"].item() == pytest.approx(0.001 * (2 * 2.0**2) / (2 * 1))


def test_sparse_loss_is_energy_plus_vcm() -> None:
    reg = SparseRegularizer(RegularizerConfig(kind="sparse", l1=0.05), latent_dim=8)
    raw = torch.randn(3, 5, 8)
    out = reg(raw)
    flat = raw.reshape(-1, 8)
    expected = energy(flat, 1.0, 0.05).mean() + sum(vcm(flat, 0.1, 0.001, 0.1).values())
    assert torch.allclose(out.loss, expected)
    assert out.z is raw  # the sparse latent is the IDM output itself


def test_noisy_kl_matches_closed_form_and_beta_scales_it() -> None:
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)]])
    # 0.5 * [(1 + 1 - 1 - 0) + (0 + 4 - 1 - ln 4)]
    expected = 0.5 * (1.0 + 3.0 - math.log(4.0))
    assert NoisyRegularizer.kl(mu, logvar).item() == pytest.approx(expected)
    reg = NoisyRegularizer(RegularizerConfig(kind="noisy", beta=1e-3), latent_dim=2).eval()
    out = reg(torch.cat([mu, logvar], dim=-1))
    assert out.loss.item() == pytest.approx(1e-3 * expected)
    assert torch.equal(out.z, mu)  # evaluation uses the mean


def test_noisy_samples_while_training() -> None:
    reg = NoisyRegularizer(RegularizerConfig(kind="noisy"), latent_dim=4).train()
    raw = torch.zeros(1000, 8)  # μ = 0, σ = 1
    z = reg(raw).z
    assert z.std().item() == pytest.approx(1.0, abs=0.1)


def test_vq_quantises_to_nearest_code_with_straight_through_gradient() -> None:
    reg = VectorQuantizer(RegularizerConfig(kind="discrete", codebook_size=3), latent_dim=2)
    with torch.no_grad():
        reg.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.0]]))
    raw = torch.tensor([[0.9, 1.2], [-1.5, 0.1]], requires_grad=True)
    out = reg(raw)
    assert torch.allclose(out.z, torch.tensor([[1.0, 1.0], [-2.0, 0.0]]))
    weights = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    (out.z * weights).sum().backward(retain_graph=True)
    assert torch.allclose(raw.grad, weights)  # straight-through: d(code)/d(raw) = identity
    raw.grad = None
    out.loss.backward()  # only the commitment term reaches the IDM output
    assert torch.allclose(raw.grad, 0.25 * 2 * (raw - out.z).detach() / raw.numel())


def test_vq_loss_is_codebook_plus_quarter_commitment() -> None:
    reg = VectorQuantizer(RegularizerConfig(kind="discrete", codebook_size=2), latent_dim=1)
    with torch.no_grad():
        reg.codebook.copy_(torch.tensor([[0.0], [10.0]]))
    out = reg(torch.tensor([[1.0], [3.0]]))
    # both map to code 0; squared distances 1 and 9 -> mean 5
    assert out.loss.item() == pytest.approx(5.0 + 0.25 * 5.0)


def test_vq_dead_code_reset_replaces_only_unused_codes() -> None:
    reg = VectorQuantizer(RegularizerConfig(kind="discrete", codebook_size=4), latent_dim=2).train()
    with torch.no_grad():
        reg.codebook.copy_(torch.tensor([[0.0, 0.0], [5.0, 5.0], [9.0, 9.0], [-9.0, -9.0]]))
    samples = torch.tensor([[0.1, 0.0], [4.9, 5.1]])
    reg(samples)  # uses codes 0 and 1
    before = reg.codebook.detach().clone()
    reset = reg.reset_dead_codes(torch.tensor([[7.0, 7.0]]))
    assert reset == 2
    assert torch.equal(reg.codebook[:2], before[:2])
    assert torch.equal(reg.codebook[2:], torch.tensor([[7.0, 7.0], [7.0, 7.0]]))
    assert reg.usage.sum().item() == 0


def test_unconstrained_baseline_passes_latents_through_at_no_cost() -> None:
    from training.models.regularizers import build_regularizer

    reg = build_regularizer(RegularizerConfig(kind="none"), latent_dim=4)
    raw = torch.randn(2, 3, 4)
    out = reg(raw)
    assert out.z is raw and out.loss.item() == 0.0 and torch.equal(reg.latent(raw), raw)
