"""Strict configs: unknown keys are named, overrides apply, both shipped configs load."""

from pathlib import Path

import pytest

from training.config import ConfigError, config_from_dict, load_config, model_config_diff


def test_shipped_configs_load() -> None:
    demo, paper = load_config("demo"), load_config("paper")
    assert demo.model.regularizer.l1 == 0.01
    assert paper.train.lam.batch == 1024 and paper.train.lam.optim.optimizer == "muon"
    assert paper.model.encoder.source == "vjepa2" and paper.model.world_model.depth == 24


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[3] / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_loads_and_names_itself(path: Path) -> None:
    assert load_config(str(path)).name == path.stem


@pytest.mark.parametrize(
    ("key", "message"),
    [("model.world_model.deph=3", "unknown key 'model.world_model.deph'"), ("trian.seed=1", "unknown key 'trian'")],
)
def test_unknown_keys_are_named(key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("demo", [key])


def test_wrong_types_and_values_are_named() -> None:
    with pytest.raises(ConfigError, match="model.regularizer.kind"):
        load_config("demo", ["model.regularizer.kind=dense"])
    with pytest.raises(ConfigError, match="data.size=64 differs from model.encoder.image_size=128"):
        load_config("demo", ["data.size=64"])
    with pytest.raises(ConfigError, match="even number"):
        load_config("demo", ["data.frames=7"])


def test_overrides_apply_and_parse_yaml_values() -> None:
    cfg = load_config("demo", ["train.lam.steps=5", "model.regularizer.kind=noisy", "data.sources=[a, b]"])
    assert cfg.train.lam.steps == 5 and cfg.model.regularizer.kind == "noisy" and cfg.data.sources == ["a", "b"]


def test_malformed_override_and_unknown_config() -> None:
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config("demo", ["train.lam.steps"])
    with pytest.raises(ConfigError, match="no config named 'nope'"):
        load_config("nope")


def test_model_config_diff_names_fields() -> None:
    a = config_from_dict({"model": {"world_model": {"depth": 2}}}).model
    b = config_from_dict({"model": {"world_model": {"depth": 3}}}).model.model_dump(mode="json")
    assert model_config_diff(a, b) == ["model.world_model.depth: expected 2, checkpoint has 3"]


def test_component_restricted_diff_ignores_what_a_stage_retrains() -> None:
    a = config_from_dict({"model": {"regularizer": {"kind": "noisy"}}}).model
    b = config_from_dict({"model": {"regularizer": {"kind": "sparse"}}}).model.model_dump(mode="json")
    assert model_config_diff(a, b, components=["encoder", "decoder"]) == []
    assert model_config_diff(a, b, components=["idm"]) == ["model.regularizer.kind: expected 'noisy', checkpoint has 'sparse'"]


def test_a_field_added_since_a_checkpoint_was_saved_compares_as_its_default() -> None:
    from training.config import ModelConfig, model_config_diff

    stored = ModelConfig().model_dump(mode="json")
    del stored["decoder"]["head"]  # saved before the decoder had a choice of heads
    assert model_config_diff(ModelConfig(), stored) == []
    stored["decoder"]["dim"] = 7
    assert model_config_diff(ModelConfig(), stored) == ["model.decoder.dim: expected 128, checkpoint has 7"]
