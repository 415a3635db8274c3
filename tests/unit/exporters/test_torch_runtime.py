"""The torch runtime straight from a checkpoint: the service's contract (names, shapes, float32)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from exporters.errors import InvalidInputs
from exporters.runtime import LoadedModel, load_checkpoint_model, planner_step
from tests.unit.exporters.tiny import ACTION_DIM, tiny_checkpoint, tiny_model
from training.checkpoint import CheckpointError
from training.evaluation.planning import latent_step


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", controller="state")


@pytest.fixture(scope="module")
def loaded(checkpoint: Path) -> LoadedModel:
    return load_checkpoint_model(checkpoint)


def test_components_take_and_give_the_documented_shapes(loaded: LoadedModel) -> None:
    cfg = loaded.config
    n, d, z, px = cfg.encoder.tokens, cfg.encoder.dim, cfg.idm.latent_dim, cfg.encoder.image_size
    rng = np.random.default_rng(0)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    assert loaded.runtime == "torch" and loaded.controller_action_dim == ACTION_DIM
    assert set(loaded.components) == {
        "encoder", "idm", "world_model", "world_model_step", "world_model_prefill", "world_model_kv_step", "decoder",
        "controller",
    }
    states = loaded.components["encoder"].run({"video": rng.random((2, 6, 3, px, px), dtype=np.float32)})["states"]
    assert states.shape == (2, 3, n, d) and states.dtype == np.float32
    latents = loaded.components["idm"].run({"states": states})["latents"]
    assert latents.shape == (2, 2, z)
    pred = loaded.components["world_model"].run({"states": states[:, :2], "latents": latents})["predictions"]
    assert pred.shape == (2, 2, n, d)
    nxt = loaded.components["world_model_step"].run({"states": states[:, 0], "latents": latents[:, 0]})["next_states"]
    np.testing.assert_allclose(nxt, pred[:, 0], atol=1e-5)  # the step is the world model at T=1
    # the key/value pair: prefill one frame, then the cached step gives the world model's second output
    first = loaded.components["world_model_prefill"].run({"states": states[:, :1], "latents": latents[:, :1]})
    layers, heads = cfg.world_model.depth, cfg.world_model.heads
    assert first["present_keys"].shape == (2, layers, heads, n, cfg.world_model.dim // heads)
    np.testing.assert_allclose(first["next_states"], pred[:, 0], atol=1e-5)
    second = loaded.components["world_model_kv_step"].run({
        "states": states[:, 1], "latents": latents[:, 1],
        "past_keys": first["present_keys"], "past_values": first["present_values"],
    })
    np.testing.assert_allclose(second["next_states"], pred[:, 1], atol=1e-5)
    assert second["present_values"].shape == (2, layers, heads, 2 * n, cfg.world_model.dim // heads)
    frames = loaded.components["decoder"].run({"states": states})["frames"]
    assert frames.shape == (2, 6, 3, px, px) and frames.min() >= 0 and frames.max() <= 1
    ctrl = loaded.components["controller"].run({"actions": f32(5, ACTION_DIM), "states": f32(5, n, d)})["latents"]
    assert ctrl.shape == (5, z)
    for name, comp in loaded.components.items():
        spec = loaded.manifest["components"][name]
        assert [s["name"] for s in spec["inputs"]] == [s.name for s in comp.inputs]
        assert comp.max_batch >= 32


def test_components_match_the_checkpoint_model(loaded: LoadedModel) -> None:
    reference = tiny_model("state")  # same seed, same weights
    states = torch.nn.functional.layer_norm(torch.randn(3, 4, 16, 32), (32,))
    latents = loaded.components["idm"].run({"states": states.numpy()})["latents"]
    with torch.no_grad():
        expected = reference.latent_actions(states)
    np.testing.assert_allclose(latents, expected.numpy(), atol=1e-5)


def test_bad_inputs_are_refused_with_the_tensor_named(loaded: LoadedModel) -> None:
    idm = loaded.components["idm"]
    good = np.zeros((1, 3, 16, 32), np.float32)
    with pytest.raises(InvalidInputs, match=r"idm.states must be float32, got float64"):
        idm.run({"states": good.astype(np.float64)})
    with pytest.raises(InvalidInputs, match=r"must have shape \[batch, steps, 16, 32\], got \[1, 3, 16, 8\]"):
        idm.run({"states": good[..., :8]})
    with pytest.raises(InvalidInputs, match=r"takes inputs \['states'\]"):
        idm.run({"video": good})
    with pytest.raises(InvalidInputs, match="outside the model's range 2..8"):
        idm.run({"states": good[:, :1]})
    wm = loaded.components["world_model"]
    with pytest.raises(InvalidInputs, match="disagree on 'steps'"):
        wm.run({"states": good, "latents": np.zeros((1, 2, 16), np.float32)})
    with pytest.raises(InvalidInputs, match="multiple of 2"):
        loaded.components["encoder"].run({"video": np.zeros((1, 3, 3, 32, 32), np.float32)})


def test_planner_step_matches_the_training_step(loaded: LoadedModel) -> None:
    reference = tiny_model("state")
    states = torch.nn.functional.layer_norm(torch.randn(7, 16, 32), (32,))
    actions = torch.rand(7, ACTION_DIM) * 2 - 1
    got = planner_step(loaded)(states, actions)
    expected = latent_step(reference, reference.controller)(states, actions)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_a_checkpoint_whose_weights_do_not_fit_its_config_is_refused(tmp_path: Path) -> None:
    import json

    ckpt = tiny_checkpoint(tmp_path / "ckpt", controller=None)
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["model_config"]["world_model"]["dim"] = 64  # the weights are 32 wide
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint_model(ckpt)
