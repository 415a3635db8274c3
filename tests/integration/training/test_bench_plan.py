"""`lawm bench plan` on a tiny model with a controller: the breakdown adds up."""

import torch

from tests.conftest import tiny_config_dict
from training.bench_plan import bench_plan
from training.config import config_from_dict
from training.models import LatentActionModel
from training.models.controller import ControllerConfig, build_controller


def test_plan_timing_breakdown() -> None:
    torch.manual_seed(0)
    model = LatentActionModel(config_from_dict(tiny_config_dict("unused", ["unused"])).model).eval()
    model.attach_controller(build_controller(ControllerConfig(action_dim=3, dim=32, heads=2), 16, 32, 4).eval())
    for context in ("one-frame", "full"):
        (row,) = bench_plan(model, "navigation", plans=1, context=context)["rows"]
        assert row["preset"] == "recon" and row["samples"] == 120 and row["context"] == context
        parts = row["encoder_s"] + row["controller_s"] + row["world_model_s"]
        assert 0 < parts <= row["total_s"]
        assert row["world_model_s"] > 0 and row["controller_s"] > 0
        assert row["wm_calls_per_s"] > 0 and row["offline_wm_calls_per_s"] > 0
