"""The "environments" data source: unlabelled video of the planning worlds, written once."""

from pathlib import Path

from training.config import DataConfig
from training.data.corpus import build_refs


def test_environment_video_is_written_once_and_only_trains(tmp_path: Path) -> None:
    cfg = DataConfig(sources=["environments"], size=32, env_dir=str(tmp_path / "env"), env_episodes=1, env_steps=3)
    refs = build_refs(cfg, "train")
    files = sorted(Path(r.path).name for r in refs)
    assert files == ["manipulation_00000.mp4", "navigation_00000.mp4"]
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "env").rglob("*.mp4")}
    assert len(build_refs(cfg, "train")) == 2  # reused, not written again
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "env").rglob("*.mp4")} == written
    assert build_refs(cfg, "heldout") == []  # no held-out split: evaluation records its own episodes
