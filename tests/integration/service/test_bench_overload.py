"""`lawm bench serve --spawn --overload 2,3 --peer litserve` in small: a real `lawm serve` and the
LitServe peer on the tiny exported model, second-long rates. Figures checked for consistency, none
for speed (the tiny model may well keep up with every rate: then nothing is shed, and that is fine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.bench.overload_run import OverloadBench, run
from service.bench.serve import ServeBench
from tests.service_fixtures import TINY_NAME, TINY_VERSION

pytest.importorskip("litserve")


def test_overload_rows_and_peer_ratios_from_one_spawned_run(tiny_model_repo: Path, tmp_path: Path) -> None:
    opts = ServeBench(rates=(4.0,), duration_s=1.0, frames=6, repo=tiny_model_repo, model=TINY_NAME,
                      version=TINY_VERSION, warmup_requests=1, max_batch_size=8)
    out = run(opts, OverloadBench(multiples=(2.0, 3.0), peer="litserve", settle_s=10.0), spawn=True, workdir=tmp_path)
    json.dumps(out)  # the payload is JSON as it stands
    assert out["peer"]["latents_max_abs_diff"] <= 1e-6  # the same latents on the bench's own clip
    assert out["peer"]["max_batch_size"] == 8 // (6 // 2)  # lawm's encoder rows per batch / tubelets per clip
    served = [(r["server"], r["multiple"]) for r in out["rows"]]
    assert served == [("lawm", 0.8), ("litserve", 0.8), ("lawm", 2.0), ("litserve", 2.0), ("lawm", 3.0)]
    for r in out["rows"]:
        sat = out["saturation_rps"][r["server"]]
        assert r["rate_rps"] == pytest.approx(r["multiple"] * sat)
        assert r["excess"] == pytest.approx(max(r["sent"] - sat * opts.duration_s, 0.0))
        failed = r["timeouts"] + r["server_5xx"] + r["connection_errors"] + r["other_4xx"]
        assert r["ok"] + r["shed_429"] + failed == r["sent"]
        assert r["server_5xx"] == 0 and r["connection_errors"] == 0 and r["other_4xx"] == 0
    assert all(r["shed_429"] == 0 for r in out["rows"] if r["server"] == "litserve")  # LitServe never sheds
    assert len(out["tables"][1]["rows"]) == 3 and "lawm/litserve" in out["verdict"]
    assert "before" in out["load_average"]
