"""Learning-rate schedule, regularizer ramp and the Muon/AdamW parameter split."""

import pytest
import torch

from training.config import OptimConfig, WorldModelConfig
from training.loop import regularizer_ramp
from training.models.world_model import WorldModel
from training.optim import build_optimizers, lr_factor, split_parameters


def test_warmup_then_cosine() -> None:
    total = 100
    assert lr_factor(0, total, 0.1, 0.0) == pytest.approx(0.1)
    assert lr_factor(9, total, 0.1, 0.0) == pytest.approx(1.0)
    assert lr_factor(10, total, 0.1, 0.0) == pytest.approx(1.0)
    assert lr_factor(55, total, 0.1, 0.0) == pytest.approx(0.5)
    assert lr_factor(100, total, 0.1, 0.01) == pytest.approx(0.01)


def test_regularizer_ramp() -> None:
    assert regularizer_ramp(0, 100, 0.3) == 0.0
    assert regularizer_ramp(15, 100, 0.3) == pytest.approx(0.5)
    assert regularizer_ramp(50, 100, 0.3) == 1.0
    assert regularizer_ramp(0, 100, 0.0) == 1.0


def holds(params: list[torch.Tensor], p: torch.Tensor) -> bool:
    return any(p is q for q in params)


def test_muon_takes_hidden_matrices_and_adamw_the_rest() -> None:
    model = WorldModel(WorldModelConfig(dim=16, depth=1, heads=2), state_dim=8, grid=2, latent_dim=4)
    matrices, rest = split_parameters([("world_model", model)])
    assert all(p.ndim == 2 for p in matrices)
    assert holds(rest, model.proj_in.weight) and holds(rest, model.proj_out.weight)  # read-in/out stay on AdamW
    assert holds(matrices, model.blocks[0].attn.qkv.weight)
    optimizers = build_optimizers(OptimConfig(optimizer="muon"), [("world_model", model)])
    assert [type(o) for o in optimizers] == [torch.optim.Muon, torch.optim.AdamW]


def test_modulation_layers_get_their_multiplier() -> None:
    model = WorldModel(WorldModelConfig(dim=16, depth=1, heads=2), state_dim=8, grid=2, latent_dim=4)
    (optimizer,) = build_optimizers(OptimConfig(lr=1e-3, modulation_lr_mult=10), [("world_model", model)])
    lrs = sorted(group["lr"] for group in optimizer.param_groups)
    assert lrs == [pytest.approx(1e-3), pytest.approx(1e-2)]
    assert holds(optimizer.param_groups[1]["params"], model.blocks[0].modulation[1].weight)


def test_frozen_groups_get_rate_zero_and_the_idm_has_its_own_group() -> None:
    from training.config import IdmConfig
    from training.models.idm import InverseDynamicsModel
    from training.optim import set_lr

    idm = InverseDynamicsModel(IdmConfig(dim=16, depth=1, heads=2, latent_dim=4), state_dim=8, grid=2, out_dim=4)
    wm = WorldModel(WorldModelConfig(dim=16, depth=1, heads=2), state_dim=8, grid=2, latent_dim=4)
    (optimizer,) = build_optimizers(OptimConfig(lr=1e-3), [("idm", idm), ("world_model", wm)])
    set_lr([optimizer], 0.5, frozen=("idm",))
    rates = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert rates == {"idm": 0.0, "rest": pytest.approx(5e-4), "modulation": pytest.approx(5e-4)}
    before = [p.detach().clone() for p in idm.parameters()]
    (idm(torch.randn(2, 3, 4, 8)).sum() + wm(torch.randn(2, 3, 4, 8), torch.randn(2, 3, 4)).sum()).backward()
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, idm.parameters(), strict=True))  # no decay either
