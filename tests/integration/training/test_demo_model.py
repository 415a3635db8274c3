"""The bundled demo model: verified, small, and it shows the paper's two basic properties on
held-out real clips (recomputed here, not read from the bundle)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.checkpoint import load_checkpoint
from training.config import load_config
from training.evaluation.common import load_lam
from training.evaluation.leak import idm_prediction_error, scene_cut_test

DEMO = Path(__file__).resolve().parents[3] / "models" / "demo"


@pytest.fixture(scope="module")
def demo():
    if not (DEMO / "manifest.json").exists():
        pytest.fail("models/demo is missing: rebuild it with `make demo-model`")
    return load_lam(DEMO)


def test_demo_bundle_is_verified_small_and_matches_the_demo_config() -> None:
    ckpt = load_checkpoint(DEMO, expected=load_config("demo").model)  # sha256 + config check
    assert ckpt.manifest["weights_dtype"] == "float16"
    size = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert size <= 30 * 2**20
    assert set(ckpt.manifest["trained"]) >= {"encoder", "decoder", "idm", "world_model"}
    assert (DEMO / "logs" / "lam.metrics.jsonl").exists()
    # the bundle carries its navigation controller (real actions forward/lateral/yaw -> latents)
    assert "controller" in ckpt.manifest["components"] and ckpt.manifest["controller_env"] == "navigation"
    assert ckpt.manifest["controller_config"]["action_dim"] == 3
    assert ckpt.manifest["run_config"]["data"]["fps"] == 4.0  # the service reads the model's fps from here


def test_idm_latents_carry_the_action(demo) -> None:
    result = idm_prediction_error(demo)
    # against another clip's latents (same distribution, none of this clip's motion), not against
    # zero, which is off-distribution for some latents and on it for others
    assert result["reduction_vs_shuffled"] >= 0.10, result["rows"]
    assert result["reduction_vs_shuffled_generated"] >= 0.15, result["rows"]
    recorded = json.loads((DEMO / "evaluation.json").read_text())["idm_prediction_error"]
    for key in ("reduction", "reduction_vs_shuffled"):  # the bundle's figures are reproducible
        assert recorded[key] == pytest.approx(result[key], rel=1e-4)
    # the held-out generated clips pass through libx264, whose output differs slightly between calls
    assert recorded["reduction_vs_shuffled_generated"] == pytest.approx(result["reduction_vs_shuffled_generated"], abs=0.01)


def test_scene_cut_raises_the_error(demo) -> None:
    result = scene_cut_test(demo)
    assert result["ratio"] >= 1.5, result["rows"]
