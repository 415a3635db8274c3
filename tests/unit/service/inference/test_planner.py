"""Planner settings of POST /v1/plan: presets chosen by action size, every bad value refused naming its field."""

from __future__ import annotations

import pytest

from service.errors import answer_for
from service.inference.errors import PlanRejected
from service.inference.planner import planner_config


def refused(code: str, *args, **kwargs) -> str:  # noqa: ANN002, ANN003
    with pytest.raises(PlanRejected) as info:
        planner_config(*args, **kwargs)
    answer = answer_for(info.value)
    assert answer.status == 422 and answer.code == code
    return info.value.message


def test_the_preset_follows_the_controllers_action_size() -> None:
    assert planner_config(None, 3, None, {}, 10**6).horizon == 8  # recon: 3-d navigation actions
    assert planner_config(None, 4, None, {}, 10**6).horizon == 3  # droid: 4-d arm actions
    cfg = planner_config(None, 2, ([-1.0, -1.0], [1.0, 1.0]), {"samples": 20}, 10**6)
    assert cfg.action_dim == 2 and cfg.samples == 20


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"horizon": 1000}, "overrides.horizon"), ({"samples": 0}, "overrides.samples"),
     ({"elites": 500}, "overrides.elites"), ({"method": "grid"}, "overrides.method"),
     ({"init_std": -1.0}, "overrides.init_std"), ({"warp": 9}, "overrides")],
)
def test_out_of_range_settings_name_the_field(overrides: dict, field: str) -> None:
    message = refused("invalid_planner_settings", "droid", 4, None, overrides, 10**6)
    assert message.startswith(f"{field}:")


def test_wrong_action_size_and_oversized_plans() -> None:
    assert "takes 3-d actions" in refused("wrong_action_dim", "droid", 3, None, {}, 10**6)
    assert "5-d actions and no preset" in refused("invalid_planner_settings", None, 5, None, {}, 10**6)
    assert "13500" in refused("plan_too_large", "droid", 4, None, {}, 1000)
