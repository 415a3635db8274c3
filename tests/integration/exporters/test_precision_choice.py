"""Precision on a real (tiny) repository: load_model's checks, the recorded choice and `lawm bench
precision`'s plumbing (1 problem, a few candidates, so it runs in seconds)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from exporters.bench_precision import bench_precision
from exporters.errors import ExportError, RepositoryError
from exporters.precision_choice import DEFAULT, RECORD_FILE, RECORDED, write_record
from exporters.repository import MANIFEST
from exporters.runtime import load_model
from tests.service_fixtures import TINY_NAME, TINY_VERSION
from training.precision import cpu_bf16_support
from training.reports import render_section

TINY_PLANNER = {"samples": 6, "horizon": 2, "iterations": 1}


@pytest.fixture
def repo(tiny_model_repo: Path, tmp_path: Path) -> Path:
    """A copy of the tiny repository this test may write a record into."""
    return Path(shutil.copytree(tiny_model_repo, tmp_path / "repo"))


def test_load_model_refuses_bf16_off_torch_and_unknown_components(tiny_model_repo: Path) -> None:
    with pytest.raises(RepositoryError, match="use runtime torch"):
        load_model(tiny_model_repo, TINY_NAME, TINY_VERSION, runtime="onnxruntime", precision="bf16")
    with pytest.raises(RepositoryError, match=r"unknown component\(s\) \['planner'\]"):
        load_model(tiny_model_repo, TINY_NAME, TINY_VERSION, runtime="torch", precision={"planner": "bf16"})
    ort = load_model(tiny_model_repo, TINY_NAME, TINY_VERSION, runtime="onnxruntime", precision="auto")
    assert ort.precision_source == "export" and set(ort.precision.values()) == {"fp32"}


def test_auto_loads_the_recorded_choice_only_for_the_export_it_was_measured_on(repo: Path) -> None:
    folder = repo / TINY_NAME / str(TINY_VERSION)
    plain = load_model(repo, TINY_NAME, TINY_VERSION, runtime="torch", precision="auto")
    assert plain.precision_source == DEFAULT and set(plain.precision.values()) == {"fp32"}  # nothing recorded yet
    write_record(folder, {"world_model": "bf16", "controller": "fp32"}, list(plain.components), {"trials": []})
    auto = load_model(repo, TINY_NAME, TINY_VERSION, runtime="torch", precision="auto")
    assert auto.precision_source == RECORDED
    assert {c for c, p in auto.precision.items() if p == "bf16"} == {"world_model_step", "world_model_prefill", "world_model_kv_step"}
    assert auto.components["world_model_kv_step"].precision == "bf16"  # type: ignore[attr-defined]
    # nothing asked: the record is not applied
    assert set(load_model(repo, TINY_NAME, TINY_VERSION, runtime="torch").precision.values()) == {"fp32"}
    # the manifest changed since (another export): the record is refused, not applied
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "created": "later"}, indent=2) + "\n")
    with pytest.raises(RepositoryError, match="another export of this version"):
        load_model(repo, TINY_NAME, TINY_VERSION, runtime="torch", precision="auto")
    (folder / RECORD_FILE).write_text("{not json")
    with pytest.raises(RepositoryError, match="cannot be read"):
        load_model(repo, TINY_NAME, TINY_VERSION, runtime="torch", precision="auto")


def test_the_bench_checks_parity_times_both_and_records_the_choice(repo: Path) -> None:
    report = bench_precision(repo=repo, name=TINY_NAME, version=TINY_VERSION, plans=1, threads=1, record=True,
                             planner=TINY_PLANNER)
    kind = cpu_bf16_support().kind
    (row,) = report["rows"]
    assert row["cpu_bf16"] == kind == report["cpu_bf16"] and (row["samples"], row["horizon"]) == (6, 2)
    assert row["fp32_ms"] > 0 and row["bf16_ms"] > 0 and row["ratio_of_medians"] == pytest.approx(row["fp32_ms"] / row["bf16_ms"])
    parity, trials = report["tables"]
    (check,) = parity["rows"]
    assert row["fp32_vs_bf16"] == pytest.approx(check["fp32_s"] / check["bf16_s"])  # one problem: its own ratio
    assert check["passed"] == (check["first_action_err"] <= 0.01 and check["cost_rel_err"] <= 0.01)
    assert row["parity"] == ("passed" if check["passed"] else "failed")
    # world model first, then the controller on top of whatever the world model kept
    first, second = trials["rows"]
    assert first["precisions"] == "world_model bf16, controller fp32"
    assert second["precisions"] == f"world_model {'bf16' if first['passed'] else 'fp32'}, controller bf16"
    assert set(report["chosen"]) == {"world_model", "controller"}
    assert "bf16 planning x" in report["verdict"] and "AMX" in report["verdict"]
    section = render_section("precision", report)  # what `lawm docs` writes into docs/benchmarks.md
    assert report["verdict"] in section and "### Plan parity per problem" in section and "| fp32_ms |" in section
    # the record: what was chosen, per component, and the check that chose it; served under auto
    record = json.loads(Path(report["recorded"]).read_text())
    assert record["parts"] == report["chosen"] and len(record["check"]["trials"]) == 2
    assert record["check"]["cpu_bf16"] == kind and record["check"]["planner"]["samples"] == 6
    auto = load_model(repo, TINY_NAME, TINY_VERSION, runtime="torch", precision="auto")
    assert auto.precision_source == RECORDED and auto.precision["controller"] == report["chosen"]["controller"]


def test_the_bench_refuses_what_it_cannot_do(repo: Path) -> None:
    with pytest.raises(ExportError, match="give that repository with --repo"):
        bench_precision(record=True)
    with pytest.raises(ExportError, match="3-d actions but the manipulation preset plans 4-d"):
        bench_precision(repo=repo, name=TINY_NAME, env="manipulation", plans=1, planner=TINY_PLANNER)
