"""Checkpoints: round trip, optimizer resume, tamper detection, config mismatch."""

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_config_dict
from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.config import config_from_dict
from training.models import LatentActionModel


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, LatentActionModel]:
    cfg = config_from_dict(tiny_config_dict(str(tmp_path), ["x"]))
    torch.manual_seed(0)
    model = LatentActionModel(cfg.model)
    optimizer = torch.optim.AdamW(model.world_model.parameters(), lr=1e-3)
    model.world_model(torch.randn(1, 2, 16, 32), torch.randn(1, 2, 16)).sum().backward()
    optimizer.step()
    path = save_checkpoint(
        tmp_path / "ckpt", model, components=model.saved_components(), stage="lam", step=7,
        model_config=cfg.model, trained=["encoder"], optimizers=[optimizer],
    )
    return path, model


def test_round_trip_restores_weights_and_manifest(saved: tuple[Path, LatentActionModel]) -> None:
    path, model = saved
    ckpt = load_checkpoint(path, expected=model.cfg)
    fresh = LatentActionModel(model.cfg)
    ckpt.load_into(fresh)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert ckpt.step == 7 and ckpt.manifest["stage"] == "lam"
    assert set(ckpt.manifest["files"]) == {"model.safetensors", "optimizer.safetensors"}
    assert ckpt.manifest["versions"]["torch"] == torch.__version__


def test_optimizer_state_round_trips(saved: tuple[Path, LatentActionModel]) -> None:
    path, model = saved
    fresh = LatentActionModel(model.cfg)
    optimizer = torch.optim.AdamW(fresh.world_model.parameters(), lr=1e-3)
    ckpt = load_checkpoint(path)
    ckpt.load_into(fresh)
    assert ckpt.load_optimizers([optimizer])
    states = list(optimizer.state.values())
    assert len(states) == len(list(fresh.world_model.parameters()))
    assert all(int(state["step"]) == 1 for state in states)
    assert any(state["exp_avg"].abs().sum() > 0 for state in states)


def test_tampered_file_is_refused(saved: tuple[Path, LatentActionModel]) -> None:
    path, _ = saved
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model.safetensors: sha256 mismatch"):
        load_checkpoint(path)


def test_checkpoint_from_another_config_names_the_fields(saved: tuple[Path, LatentActionModel], tmp_path: Path) -> None:
    path, _ = saved
    other = config_from_dict(tiny_config_dict(str(tmp_path), ["x"], **{"model.world_model.depth": 3, "model.idm.latent_dim": 8}))
    with pytest.raises(CheckpointError, match="model.idm.latent_dim: expected 8, checkpoint has 16") as err:
        load_checkpoint(path, expected=other.model)
    assert "model.world_model.depth: expected 3, checkpoint has 2" in str(err.value)


def test_missing_or_damaged_manifest(tmp_path: Path, saved: tuple[Path, LatentActionModel]) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent")
    path, _ = saved
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)


def test_weights_load_without_pickle(saved: tuple[Path, LatentActionModel]) -> None:
    path, _ = saved
    manifest = json.loads((path / "manifest.json").read_text())
    assert all(name.endswith(".safetensors") for name in manifest["files"])  # no .pt/.pkl anywhere


def test_fp16_bundle_loads_as_float32(tmp_path: Path, saved: tuple[Path, LatentActionModel]) -> None:
    _, model = saved
    path = save_checkpoint(
        tmp_path / "half", model, components=model.saved_components(), stage="bundle", step=1,
        model_config=model.cfg, dtype=torch.float16,
    )
    fresh = LatentActionModel(model.cfg)
    load_checkpoint(path).load_into(fresh)
    weight = fresh.world_model.proj_in.weight
    assert weight.dtype == torch.float32
    assert torch.allclose(weight, model.world_model.proj_in.weight, atol=1e-3)
