"""Cycle-consistency transfer evaluation on the held-out real clips with a tiny model."""

import math

import numpy as np
import torch

from tests.conftest import tiny_config_dict
from training.config import config_from_dict
from training.evaluation.pixels import psnr, ssim
from training.evaluation.transfer import cycle_consistency
from training.models import LatentActionModel


def test_psnr_and_ssim_on_known_images() -> None:
    a = np.zeros((2, 3, 16, 16))
    b = a + 0.1
    assert math.isclose(psnr(a, b), 20.0, rel_tol=1e-9)
    assert psnr(a, a) == float("inf")
    rng = np.random.default_rng(0)
    c = rng.random((2, 3, 16, 16))
    assert ssim(c, c) == 1.0 and ssim(c, rng.random((2, 3, 16, 16))) < 0.5


def test_cycle_consistency_reports_both_spaces() -> None:
    torch.manual_seed(0)
    model = LatentActionModel(config_from_dict(tiny_config_dict("unused", ["unused"])).model).eval()
    result = cycle_consistency(model, clips_per_file=2)
    mean = result["rows"][-1]
    assert mean["clips"] == "mean" and mean["pairs"] == 4
    assert all(np.isfinite(mean[k]) for k in ("orig_l1", "transfer_l1", "orig_psnr", "transfer_psnr", "orig_ssim"))
    assert mean["ratio_l1"] > 0
