import pytest

from training.config import load_config
from training.sweep import CAPACITY, variant_overrides, variants


def test_every_variant_is_a_valid_demo_config_differing_only_in_the_regularizer() -> None:
    base = load_config("demo")
    assert len(variants()) == 8
    for kind, level in variants():
        cfg = load_config("demo", variant_overrides(kind, level))
        assert cfg.model.regularizer.kind == kind and cfg.name == f"sweep-{kind}-{level}"
        assert cfg.model.encoder == base.model.encoder and cfg.model.world_model == base.model.world_model
        knob, value = cfg.model.regularizer.capacity
        assert value == CAPACITY[kind][level][knob]


def test_capacity_orders_follow_the_paper() -> None:
    assert CAPACITY["sparse"]["low"]["l1"] > CAPACITY["sparse"]["mid"]["l1"] > CAPACITY["sparse"]["high"]["l1"]
    assert CAPACITY["noisy"]["low"]["beta"] > CAPACITY["noisy"]["mid"]["beta"] > CAPACITY["noisy"]["high"]["beta"]
    assert CAPACITY["discrete"]["low"]["codebook_size"] < CAPACITY["discrete"]["high"]["codebook_size"]
    with pytest.raises(ValueError, match="unknown sweep variant"):
        variant_overrides("sparse", "extreme")
