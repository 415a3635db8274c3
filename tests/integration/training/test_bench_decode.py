"""`lawm bench decode`: both paths timed on a real file, their frames checked identical, JSON written."""

import json
from pathlib import Path

from typer.testing import CliRunner

from tests.unit.training.data.datafiles import encode_video
from training.bench_decode import PATHS, bench_decode
from training.cli import app


def b_frame_clip(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    options = {"x264-params": "bframes=3:b-pyramid=normal:keyint=24", "crf": "26", "preset": "veryfast"}
    path.write_bytes(encode_video("mp4", "libx264", n=60, options=options))
    return path


def test_bench_times_both_paths_on_identical_frames(tmp_path: Path) -> None:
    result = bench_decode(b_frame_clip(tmp_path), fps=4.0, size=32, repeats=2)
    assert result["identical"] is True
    assert [row["path"] for row in result["rows"]] == list(PATHS)
    assert all(row["cpu_ms"] > 0 and row["frames_out"] == 8 for row in result["rows"])  # 2 s at 4 fps
    assert len(result["paired_cpu_ratios"]) == 2 and result["cpu_ratio"] > 0
    assert "load_average" in result and result["cpu"]


def test_cli_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "decode.json"
    args = ["bench", "decode", "--video", str(b_frame_clip(tmp_path)), "--size", "32", "--repeats", "1", "--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert payload["benchmark"] == "decode" and payload["identical"] is True
    assert "lawm bench decode --video" in payload["command"]


def test_cli_refuses_a_file_that_is_no_video(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    result = CliRunner().invoke(app, ["bench", "decode", "--video", str(junk), "--repeats", "1"])
    assert result.exit_code == 2 and "junk.mp4" in result.output
