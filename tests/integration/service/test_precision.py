"""LAWM_PRECISION on the torch runtime: the planner's components in bf16 by setting, or as recorded
by `lawm bench precision --record` under "auto"; GET /v1/models says which and why."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from exporters.precision_choice import PLANNER_COMPONENTS, write_record
from tests.integration.service.conftest import running_app, service_settings
from tests.service_fixtures import TINY_NAME, TINY_VERSION
from training.precision import cpu_bf16_support

pytestmark = pytest.mark.anyio
SMALL = {"runtime": "torch", "max_batch_size": 2, "plan_max_batch_size": 4, "api_keys": []}  # a short warm-up


async def models_precision(settings_overrides: dict[str, Any], repo: Path) -> dict[str, Any]:
    async with running_app(service_settings(repo, **SMALL, **settings_overrides)) as (client, _):
        (info,) = (await client.get("/v1/models")).json()["models"]
        assert info["runtime"] == "torch"  # ready: every component ran at its precision in the warm-up
        return info["precision"]


async def test_bf16_by_setting_lowers_the_planner_components(tiny_model_repo: Path) -> None:
    got = await models_precision({"precision": "bf16"}, tiny_model_repo)
    assert got["source"] == "setting" and got["cpu_bf16"] == cpu_bf16_support().kind
    assert {c for c, p in got["components"].items() if p == "bf16"} == set(PLANNER_COMPONENTS)
    assert got["components"]["encoder"] == "fp32"


async def test_auto_serves_the_recorded_choice_and_unset_serves_fp32(tiny_model_repo: Path, tmp_path: Path) -> None:
    repo = Path(shutil.copytree(tiny_model_repo, tmp_path / "repo"))
    components = ["encoder", "idm", "world_model", *PLANNER_COMPONENTS, "decoder"]
    write_record(repo / TINY_NAME / str(TINY_VERSION), {"world_model": "fp32", "controller": "bf16"}, components, {})
    got = await models_precision({"precision": "auto"}, repo)
    assert got["source"] == "recorded plan-parity check"
    assert [c for c, p in got["components"].items() if p == "bf16"] == ["controller"]
    unset = await models_precision({}, repo)  # the record is there, but nobody asked for it
    assert unset["source"] == "default" and set(unset["components"].values()) == {"fp32"}
