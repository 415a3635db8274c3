"""`lawm bench serve --spawn` end to end on the tiny exported model: two real `lawm serve` processes
(batching on, then off), open-loop load against each, the offline engine timed, planning measured,
and the JSON written — every figure checked for consistency, none for speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service_fixtures import TINY_NAME, TINY_VERSION

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_serve_spawn_compares_batching_on_and_off(tiny_model_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "serve.json"
    command = [
        sys.executable, "-m", "service.cli", "bench", "serve", "--spawn", "--repo", str(tiny_model_repo),
        "--model", TINY_NAME, "--version", str(TINY_VERSION), "--rates", "3,6", "--duration", "1.5",
        "--frames", "6", "--plan-rates", "1", "--p99-target-ms", "60000", "--max-batch-size", "8",
        "--json", str(out),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    servers = [r["server"] for r in result["rows"]]
    assert servers == ["batching<=8", "batching<=8", "unbatched", "unbatched"]
    for row in result["rows"]:
        assert row["sent"] > 0 and row["ok"] + row["rejected"] + row["errors"] == row["sent"]
        assert row["errors"] == 0
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert 1 <= row["mean_batch"] <= (8 if row["server"] != "unbatched" else 1)
    on, off = result["tables"][0]["rows"]
    assert off["encoder_batch"] == 1.0 and off["idm_batch"] == 1.0  # --max-batch-size 1 really ran row by row
    assert on["offline_rps"] > 0 and on["share_of_offline"] == pytest.approx(on["saturation_rps"] / on["offline_rps"])
    assert result["batching_speedup"] == pytest.approx(on["saturation_rps"] / off["saturation_rps"])
    tables = {t["title"].split(" ")[0]: t["rows"] for t in result["tables"]}
    assert [r["batch"] for r in tables["Offline"]] == [1, 2, 4, 8, 16, 32]
    assert all(r["encoder_ms_per_row"] > 0 and r["idm_ms_per_row"] > 0 for r in tables["Offline"])
    plan_rows = tables["Planning"]  # the tiny model has a controller: planning was measured
    assert plan_rows[0]["ok"] >= 1 and result["plan_rps_at_p99_target"] is not None
    assert "batching x" in result["verdict"] and "of the offline engine" in result["verdict"]
    assert "At saturation" in done.stdout
