"""`lawm export` end to end on a tiny checkpoint with a controller: the repository, its manifest,
the loader on every CPU runtime, tampering, and the planner through onnxruntime.

The export runs once per module (through the real CLI); it takes about a minute on 2 cores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from exporters.components import random_inputs, spec_shape
from exporters.errors import ExportError, ParityError, RepositoryError
from exporters.export import export_model
from exporters.onnx_export import opset_of
from exporters.parity import TOLERANCES, output_scale
from exporters.repository import file_hashes, read_version_manifest
from exporters.runtime import LoadedModel, load_checkpoint_model, load_model, planner_step
from service.cli import app
from tests.unit.exporters.tiny import tiny_checkpoint
from training.checkpoint import sha256_file
from training.planning import PlannerConfig, get_cost, plan

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", controller="state")


@pytest.fixture(scope="module")
def exported(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    repo = tmp_path_factory.mktemp("repo")
    result = runner.invoke(app, ["export", str(checkpoint), "--to", str(repo), "--name", "tiny"])
    assert result.exit_code == 0, result.output
    return repo, result.output


@pytest.fixture(scope="module")
def reference(checkpoint: Path) -> LoadedModel:
    return load_checkpoint_model(checkpoint)


@pytest.fixture(scope="module")
def onnx_model(exported: tuple[Path, str]) -> LoadedModel:
    return load_model(exported[0], "tiny")


def test_the_cli_reports_every_component(exported: tuple[Path, str]) -> None:
    repo, output = exported
    assert (repo / "tiny" / "1" / "manifest.json").is_file()
    for component in (
        "encoder", "idm", "world_model", "world_model_step", "world_model_prefill", "world_model_kv_step", "decoder",
        "controller",
    ):
        assert component in output


def test_the_manifest_matches_the_files(exported: tuple[Path, str], checkpoint: Path) -> None:
    folder = exported[0] / "tiny" / "1"
    manifest = read_version_manifest(folder)
    assert manifest["files"] == file_hashes(folder)  # every file listed, every hash right
    assert manifest["source"]["sha256"] == sha256_file(checkpoint / "model.safetensors")
    assert manifest["controller_action_dim"] == 3 and manifest["precision"] == "fp32"
    assert {"torch", "onnx", "onnxruntime", "onnxscript"} <= set(manifest["versions"])
    for entry in manifest["components"].values():
        path = folder / entry["files"]["onnx"]
        assert opset_of(path) == manifest["onnx"]["opset"] >= 18
        graph = onnx.load(str(path)).graph
        assert [i.name for i in graph.input] == [s["name"] for s in entry["inputs"]]
        assert [o.name for o in graph.output] == [s["name"] for s in entry["outputs"]]
        assert entry["inputs"][0]["shape"][0] == "batch"
    report = manifest["parity"]["onnxruntime"]
    assert report["passed"] and report["real_inputs"]
    kinds = {(c["component"], c["inputs"], c["batch"]) for c in report["cases"]}
    for name, entry in manifest["components"].items():
        for batch in (1, entry["profile"]["batch"][2]):
            assert {(name, "random", batch), (name, "real", batch)} <= kinds


@pytest.mark.parametrize("batch", [1, 3, 32])
def test_every_component_round_trips_through_onnxruntime(onnx_model: LoadedModel, reference: LoadedModel, batch: int) -> None:
    assert onnx_model.runtime == "onnxruntime" and onnx_model.version == 1
    gen = torch.Generator().manual_seed(batch)
    for name, comp in onnx_model.components.items():
        x = {k: v.numpy() for k, v in random_inputs(comp.inputs, batch, 3, onnx_model.config, gen).items()}
        expected = reference.components[name].run(x)[comp.outputs[0].name]
        got = comp.run(x)[comp.outputs[0].name]
        assert got.shape == spec_shape(comp.outputs[0], batch, 3, onnx_model.config)
        # against torch float32 (not the float64 reference): the tiny model is well conditioned
        assert np.abs(got - expected).max() <= TOLERANCES["fp32"] * output_scale(expected), name


def test_the_torch_runtime_loads_from_the_repository_too(exported: tuple[Path, str], reference: LoadedModel) -> None:
    model = load_model(exported[0], "tiny", runtime="torch")
    states = np.random.default_rng(0).standard_normal((2, 4, 16, 32)).astype(np.float32)
    np.testing.assert_array_equal(
        model.components["idm"].run({"states": states})["latents"], reference.components["idm"].run({"states": states})["latents"]
    )


def test_the_planner_makes_the_same_plan_through_onnxruntime_as_through_torch(
    onnx_model: LoadedModel, reference: LoadedModel
) -> None:
    cfg = PlannerConfig(action_low=(-1.0,) * 3, action_high=(1.0,) * 3, horizon=3, samples=48, elites=6, iterations=3, seed=7)
    gen = torch.Generator().manual_seed(0)
    start, goal = (torch.nn.functional.layer_norm(torch.randn(16, 32, generator=gen), (32,)) for _ in range(2))
    via_torch = plan(planner_step(reference), get_cost("l1"), start, goal, cfg)
    via_onnx = plan(planner_step(onnx_model), get_cost("l1"), start, goal, cfg)
    torch.testing.assert_close(via_onnx.actions, via_torch.actions, atol=1e-5, rtol=0)
    assert via_onnx.cost == pytest.approx(via_torch.cost, rel=1e-5)
    assert via_onnx.history == pytest.approx(via_torch.history, rel=1e-5)


def test_the_key_value_graphs_take_any_batch_and_context_length(exported: tuple[Path, str]) -> None:
    folder = exported[0] / "tiny" / "1"
    dims = lambda value: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]  # noqa: E731
    step = onnx.load(str(folder / "world_model_kv_step.onnx")).graph
    inputs, outputs = {i.name: dims(i) for i in step.input}, {o.name: dims(o) for o in step.output}
    assert inputs["past_keys"] == inputs["past_values"] == ["batch", 2, 2, "16*steps", 16]
    assert outputs["present_keys"] == ["batch", 2, 2, "16*steps+16", 16] and outputs["next_states"] == ["batch", 16, 32]
    prefill = onnx.load(str(folder / "world_model_prefill.onnx")).graph
    assert {i.name: dims(i) for i in prefill.input}["states"] == ["batch", "steps", 16, 32]
    assert {o.name: dims(o) for o in prefill.output}["present_values"] == ["batch", 2, 2, "16*steps", 16]


def test_the_key_value_components_match_torch_to_1e_5_with_their_caches(exported: tuple[Path, str]) -> None:
    """The export's own parity report (float64 torch reference, random and real inputs, batch 1 and
    the profile's largest) holds every output of the cache components within 1e-5 of the scale."""
    report = read_version_manifest(exported[0] / "tiny" / "1")["parity"]["onnxruntime"]
    cases = [c for c in report["cases"] if c["component"] in ("world_model_prefill", "world_model_kv_step")]
    assert {c["output"] for c in cases} == {"next_states", "present_keys", "present_values"}
    assert {c["inputs"] for c in cases} == {"random", "real"}
    assert max(c["max_abs_err"] / c["scale"] for c in cases) <= 1e-5


def test_a_cached_rollout_through_onnxruntime_equals_the_uncached_torch_rollout(
    onnx_model: LoadedModel, checkpoint: Path
) -> None:
    from exporters.torch_runtime import build_model
    from training.models.world_model import autoregressive_rollout

    model, _ = build_model(checkpoint)
    gen = torch.Generator().manual_seed(3)
    context = torch.nn.functional.layer_norm(torch.randn(2, 3, 16, 32, generator=gen), (32,))  # [B, 3, N, D]
    latents = torch.randn(2, 2 + 5, 16, generator=gen)  # 2 between the observed states, then 5 steps
    with torch.no_grad():
        expected = autoregressive_rollout(model.world_model, context, latents[:, :2], latents[:, 2:], cached=False)  # [B, 5, N, D]
    out = onnx_model.components["world_model_prefill"].run({"states": context.numpy(), "latents": latents[:, :3].numpy()})
    got = [out["next_states"]]
    for h in range(1, 5):
        out = onnx_model.components["world_model_kv_step"].run({
            "states": got[-1], "latents": latents[:, 2 + h].numpy(),
            "past_keys": out["present_keys"], "past_values": out["present_values"],
        })
        got.append(out["next_states"])
    assert out["present_keys"].shape[3] == 16 * 7  # 3 observed + 4 predicted frames cached
    assert np.abs(np.stack(got, axis=1) - expected.numpy()).max() <= 1e-5 * output_scale(expected.numpy())


def test_full_context_plans_agree_across_runtimes_and_differ_from_one_frame_plans(
    onnx_model: LoadedModel, reference: LoadedModel, checkpoint: Path
) -> None:
    from exporters.torch_runtime import build_model
    from training.evaluation.planning import latent_step

    # horizon 9 > max_steps 8: the window slides in the last step, on every runtime alike
    cfg = PlannerConfig(action_low=(-1.0,) * 3, action_high=(1.0,) * 3, horizon=9, samples=24, elites=4, iterations=2, seed=5)
    gen = torch.Generator().manual_seed(1)
    start, goal = (torch.nn.functional.layer_norm(torch.randn(16, 32, generator=gen), (32,)) for _ in range(2))
    model, _ = build_model(checkpoint)
    in_training = plan(latent_step(model, model.controller, "full"), get_cost("l1"), start, goal, cfg)
    via_torch = plan(planner_step(reference, "full"), get_cost("l1"), start, goal, cfg)
    via_onnx = plan(planner_step(onnx_model, "full"), get_cost("l1"), start, goal, cfg)
    for other in (via_torch, via_onnx):
        torch.testing.assert_close(other.actions, in_training.actions, atol=1e-5, rtol=0)
        assert other.history == pytest.approx(in_training.history, rel=1e-5)
    one_frame = plan(planner_step(onnx_model), get_cost("l1"), start, goal, cfg)
    # the tiny model barely uses its context, but far more than the runtimes disagree (~1e-6)
    assert abs(one_frame.history[0] - via_onnx.history[0]) > 1e-4


def test_a_tampered_file_is_refused(exported: tuple[Path, str], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(exported[0], repo)
    path = repo / "tiny" / "1" / "world_model_step.onnx"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RepositoryError, match=r"world_model_step.onnx: sha256 mismatch"):
        load_model(repo, "tiny")


def test_a_corrupt_onnx_file_is_refused_even_with_a_matching_hash(exported: tuple[Path, str], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(exported[0], repo)
    folder = repo / "tiny" / "1"
    (folder / "idm.onnx").write_bytes(b"\x08\x07 not a protobuf")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = file_hashes(folder)  # as if the damage happened before the export wrote its hashes
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RepositoryError, match=r"idm.onnx cannot be loaded by onnxruntime"):
        load_model(repo, "tiny")


def test_tensorrt_without_tensorrt_is_a_clear_refusal(exported: tuple[Path, str]) -> None:
    with pytest.raises(RepositoryError, match="holds no TensorRT engines .* runtime='onnxruntime'"):
        load_model(exported[0], "tiny", runtime="tensorrt")
    with pytest.raises(ExportError, match="tensorrt is not installed|needs a CUDA device"):
        export_model(Path("unused"), exported[0], name="tiny", version=9, fmt="tensorrt")


# ----------------------------------------------------------------------------- bad input
def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_bad_requests_are_refused_before_any_work(exported: tuple[Path, str], checkpoint: Path, tmp_path: Path) -> None:
    repo = str(exported[0])
    code, out = cli("export", str(checkpoint), "--to", repo, "--format", "tflite")
    assert code == 2 and "unsupported format 'tflite'" in out
    code, out = cli("export", str(checkpoint), "--to", repo, "--name", "../escape")
    assert code == 2 and "not a plain folder name" in out
    assert not (exported[0].parent / "escape").exists()
    code, out = cli("export", str(checkpoint), "--to", repo, "--name", "tiny", "--version", "1")
    assert code == 2 and "already holds version 1" in out and "--force" in out
    code, out = cli("export", str(checkpoint), "--to", repo, "--name", "tiny", "--config", "demo")
    assert code == 2 and "another model config" in out and "model.encoder.image_size" in out
    code, out = cli("export", str(tmp_path / "nothing"), "--to", repo, "--name", "other")
    assert code == 2 and "not found" in out
    assert sorted(p.name for p in exported[0].iterdir()) == ["tiny"]  # nothing written by any of them


def test_a_checkpoint_without_a_decoder_is_refused(tmp_path: Path) -> None:
    from tests.unit.exporters.tiny import tiny_model
    from training.checkpoint import save_checkpoint

    model = tiny_model(None)
    save_checkpoint(tmp_path / "lam", model, components=("encoder", "idm", "regularizer", "world_model"), stage="lam",
                    step=1, model_config=model.cfg)
    code, out = cli("export", str(tmp_path / "lam"), "--to", str(tmp_path / "repo"))
    assert code == 2 and "lacks the components ['decoder']" in out
    assert not (tmp_path / "repo").exists()


def test_a_failed_parity_check_writes_nothing(checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TOLERANCES, "fp32", 0.0)  # no float32 graph meets a zero bound
    with pytest.raises(ParityError, match=r"encoder \(random, batch 1\)"):
        export_model(checkpoint, tmp_path / "repo", name="tiny", real_inputs=False)
    assert not (tmp_path / "repo").exists()


def test_bench_export_times_both_runtimes_side_by_side(exported: tuple[Path, str]) -> None:
    from exporters.bench import bench_export

    result = bench_export(repo=exported[0], name="tiny", batches=(1, 4), components=("idm", "world_model_step"), repeats=2)
    assert [(r["component"], r["batch"]) for r in result["rows"]] == [
        ("idm", 1), ("idm", 4), ("world_model_step", 1), ("world_model_step", 4)
    ]
    for row in result["rows"]:
        assert row["torch_rows_s"] > 0 and row["onnxruntime_rows_s"] > 0
        assert row["ort_vs_torch"] == pytest.approx(row["onnxruntime_rows_s"] / row["torch_rows_s"])
    assert result["rows"][0]["steps"] == 4 and result["rows"][2]["steps"] is None
    assert "not timed" in result["verdict"] and "sha256" in result["checkpoint"]


def test_bench_rollout_times_cached_and_rerun_rollouts_and_plans_side_by_side(exported: tuple[Path, str]) -> None:
    from exporters.bench_rollout import bench_rollout
    from training.reports import render_section

    result = bench_rollout(repo=exported[0], name="tiny", context=3, steps=3, batches=(1, 2), repeats=1, plans=1)
    assert [(r["runtime"], r["batch"]) for r in result["rows"]] == [
        ("torch", 1), ("onnxruntime", 1), ("torch", 2), ("onnxruntime", 2)
    ]
    for row in result["rows"]:
        assert row["rerun_s"] > 0 and row["cached_s"] > 0 and row["speedup"] == row["rerun_s"] / row["cached_s"]
        assert row["gflop_cached"] < row["gflop_rerun"]
        assert row["step_parity"] <= 1e-5 and row["rollout_diff"] <= 1e-4
    plans = result["tables"][0]["rows"]
    assert [r["runtime"] for r in plans] == ["torch", "onnxruntime"]
    assert all(r["one_frame_s"] > 0 and r["full_context_s"] > 0 for r in plans)
    assert "cached vs re-run on onnxruntime" in result["verdict"] and "load_average" in result
    section = render_section("rollout", result)
    assert "**load_average**" in section and "### Planning cost: one-frame vs full context" in section
