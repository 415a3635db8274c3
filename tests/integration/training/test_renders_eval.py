"""The render evaluation on the held-out real clips with a tiny model: every render is scored,
the no-model references are what they claim, and the strip holds one row per render."""

from pathlib import Path

import numpy as np
import torch

from tests.conftest import tiny_config_dict
from training.config import config_from_dict
from training.data.video import decode_image_bytes
from training.evaluation.common import heldout_videos
from training.evaluation.renders import render_quality, renders
from training.models import LatentActionModel
from training.models.encoder import to_unit_float


def tiny() -> LatentActionModel:
    torch.manual_seed(0)
    return LatentActionModel(config_from_dict(tiny_config_dict("unused", ["unused"])).model).eval()


def test_renders_and_their_references() -> None:
    model = tiny()
    (_, a), (_, b) = list(heldout_videos(model, clips_per_file=2).items())[:2]
    out = renders(model, a[:2], b[:2])
    k = model.cfg.encoder.tubelet
    real = to_unit_float(a[:2]).numpy()
    assert set(out) == {"real", "autoencoded", "one-step", "transfer", "previous frame held", "clip mean frame"}
    assert all(v.shape == out["real"].shape for v in out.values())
    np.testing.assert_array_equal(out["real"], real[:, k:])
    # the held frame of every state after the first is the last real frame before it
    np.testing.assert_array_equal(out["previous frame held"][:, :k], np.repeat(real[:, k - 1 : k], k, axis=1))
    np.testing.assert_allclose(out["clip mean frame"][:, 0], real[:, k:].mean(axis=1), atol=1e-6)
    assert all(v.min() >= 0.0 and v.max() <= 1.0 for v in out.values())


def test_render_quality_rows_verdict_and_strip(tmp_path: Path) -> None:
    model = tiny()
    result = render_quality(model, clips_per_file=2, strip=tmp_path / "strip.png")
    means = {r["render"]: r for r in result["rows"] if r["video"] == "mean"}
    assert set(means) == {"autoencoded", "one-step", "transfer", "previous frame held", "clip mean frame"}
    assert all(np.isfinite(r["psnr_db"]) and -1 <= r["ssim"] <= 1 for r in result["rows"])
    assert "bar 22 dB" in result["verdict"]
    size = model.cfg.encoder.image_size
    strip = decode_image_bytes((tmp_path / "strip.png").read_bytes(), what="strip", max_pixels=1 << 24)
    assert strip.shape == (4 * size, 6 * size, 3)  # real, autoencoded, one-step, transfer x 6 frames
