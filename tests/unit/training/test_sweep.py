import pytest

from training.config import load_config
from training.sweep import CAPACITY, UNCONSTRAINED, variant_overrides, variants


def test_every_variant_is_a_valid_demo_config_differing_only_in_the_regularizer() -> None:
    base = load_config("demo")
    capacity = variants()[:-1]
    assert len(capacity) == 9 and {level for _, level in capacity} == {"low", "mid", "high"}
    assert variants()[-1] == UNCONSTRAINED
    reference = load_config("demo", variant_overrides(*UNCONSTRAINED))
    assert reference.model.regularizer.kind == "none" and reference.name == "sweep-none-unconstrained"
    for kind, level in capacity:
        cfg = load_config("demo", variant_overrides(kind, level))
        assert cfg.model.regularizer.kind == kind and cfg.name == f"sweep-{kind}-{level}"
        assert cfg.model.encoder == base.model.encoder and cfg.model.world_model == base.model.world_model
        knob, value = cfg.model.regularizer.capacity
        assert value == CAPACITY[kind][level][knob]


def test_capacity_orders_follow_the_paper() -> None:
    assert CAPACITY["sparse"]["low"]["l1"] > CAPACITY["sparse"]["mid"]["l1"] > CAPACITY["sparse"]["high"]["l1"]
    assert CAPACITY["noisy"]["low"]["beta"] > CAPACITY["noisy"]["mid"]["beta"] > CAPACITY["noisy"]["high"]["beta"]
    sizes = [CAPACITY["discrete"][level]["codebook_size"] for level in ("low", "mid", "high")]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    with pytest.raises(ValueError, match="unknown sweep variant"):
        variant_overrides("sparse", "extreme")
