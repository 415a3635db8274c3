"""`lawm bench train` on a tiny config: every stage timed, and the LAM step on cached states beside it."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import tiny_config_dict
from training.bench import bench_training
from training.config import config_from_dict


def test_the_lam_step_is_also_timed_on_cached_states(tmp_path: Path, tiny_corpus: Path) -> None:
    cfg = config_from_dict(tiny_config_dict(str(tmp_path), [str(tiny_corpus)]))
    result = bench_training(cfg, steps=1, repeats=1)
    rows = {r["stage"]: r for r in result["rows"]}
    assert list(rows) == ["encoder", "lam", "lam, cached states (train.lam.cache_clips)"]
    cached, video = rows["lam, cached states (train.lam.cache_clips)"], rows["lam"]
    assert cached["decode_s"] == 0 and cached["step_s"] > 0 and cached["batch"] == video["batch"] == 2
    assert cached["speedup_vs_video_loop"] == (video["decode_s"] + video["step_s"]) / cached["step_s"]
    assert result["command"] == "lawm bench train --config tiny --steps 1 --repeats 1"
    assert "before" in result["load_average"] and "after" in result["load_average"]
