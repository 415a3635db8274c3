"""Engine helpers that need no model: warm-up batch sizes and where the frame rate comes from."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from service.inference.engine import DEFAULT_FPS, model_fps
from service.inference.warmup import warm_batch_sizes
from training.checkpoint import FORMAT


def test_warm_sizes_cover_every_power_of_two_and_the_limit() -> None:
    assert warm_batch_sizes(1) == [1]
    assert warm_batch_sizes(32) == [1, 2, 4, 8, 16, 32]
    assert warm_batch_sizes(300) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]


def test_fps_from_the_manifest_then_the_source_checkpoint(tmp_path: Path) -> None:
    assert model_fps(SimpleNamespace(manifest={"fps": 8})) == 8.0
    assert model_fps(SimpleNamespace(manifest={"run_config": {"data": {"fps": 2.5}}})) == 2.5
    folder = tmp_path / "version"
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "checkpoint" / "manifest.json").write_text(json.dumps({"format": FORMAT, "run_config": {"data": {"fps": 6.0}}}))
    assert model_fps(SimpleNamespace(manifest={}), folder) == 6.0
    assert model_fps(SimpleNamespace(manifest={}), tmp_path / "missing") == DEFAULT_FPS
