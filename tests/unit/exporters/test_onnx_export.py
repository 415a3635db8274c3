"""One component through torch.onnx (dynamo) and onnxruntime: dynamic axes, precision, damaged files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from exporters.components import build_graph, component_specs, default_profiles, random_inputs
from exporters.errors import RepositoryError
from exporters.onnx_export import OPSET, cast_graph, export_component, opset_of
from exporters.ort_runtime import OrtComponent
from exporters.parity import TOLERANCES, output_scale
from tests.unit.exporters.tiny import tiny_model

pytestmark = pytest.mark.slow  # one dynamo export per module: ~15 s on 2 cores
MODEL = tiny_model(None)
SPECS, PROFILES = component_specs(MODEL.cfg), default_profiles(MODEL.cfg)


@pytest.fixture(scope="module")
def world_model_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ins, outs = SPECS["world_model"]
    path = tmp_path_factory.mktemp("onnx") / "world_model.onnx"
    return export_component(build_graph(MODEL, "world_model"), ins, outs, PROFILES["world_model"], MODEL.cfg, path)


def test_the_graph_declares_named_dynamic_axes_and_opset(world_model_onnx: Path) -> None:
    model = onnx.load(str(world_model_onnx))
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input}
    assert dims == {"states": ["batch", "steps", 16, 32], "latents": ["batch", "steps", 16]}
    assert [d.dim_param for d in model.graph.output[0].type.tensor_type.shape.dim][:2] == ["batch", "steps"]
    assert opset_of(world_model_onnx) == OPSET >= 18
    onnx.checker.check_model(str(world_model_onnx), full_check=True)


@pytest.mark.parametrize(("batch", "steps"), [(1, 1), (2, 3), (5, 8), (33, 2)])
def test_onnxruntime_matches_torch_at_every_batch_and_context(world_model_onnx: Path, batch: int, steps: int) -> None:
    ins, outs = SPECS["world_model"]
    comp = OrtComponent("world_model", world_model_onnx, ins, outs, PROFILES["world_model"], ["CPUExecutionProvider"])
    x = random_inputs(ins, batch, steps, MODEL.cfg, torch.Generator().manual_seed(batch))
    with torch.no_grad():
        expected = MODEL.world_model(x["states"], x["latents"]).numpy()
    got = comp.run({k: v.numpy() for k, v in x.items()})["predictions"]
    assert np.abs(got - expected).max() <= TOLERANCES["fp32"] * output_scale(expected)


def test_future_context_does_not_leak_into_past_predictions(world_model_onnx: Path) -> None:
    """The exported block-causal mask: changing the last step changes no earlier output."""
    ins, outs = SPECS["world_model"]
    comp = OrtComponent("world_model", world_model_onnx, ins, outs, PROFILES["world_model"], ["CPUExecutionProvider"])
    x = {k: v.numpy() for k, v in random_inputs(ins, 2, 5, MODEL.cfg, torch.Generator().manual_seed(0)).items()}
    y = {k: v.copy() for k, v in x.items()}
    y["states"][:, -1] += 1.0
    y["latents"][:, -1] -= 1.0
    a, b = comp.run(x)["predictions"], comp.run(y)["predictions"]
    np.testing.assert_allclose(a[:, :-1], b[:, :-1], atol=1e-5)
    assert np.abs(a[:, -1] - b[:, -1]).max() > 1e-2


def test_a_half_precision_graph_keeps_float32_io_and_its_documented_bound(tmp_path: Path) -> None:
    ins, outs = SPECS["world_model_step"]
    graph = cast_graph(build_graph(MODEL, "world_model_step"), "fp16", ins)
    path = export_component(graph, ins, outs, PROFILES["world_model_step"], MODEL.cfg, tmp_path / "step.onnx")
    assert {n.op_type for n in onnx.load(str(path)).graph.node} >= {"Cast"}
    comp = OrtComponent("world_model_step", path, ins, outs, PROFILES["world_model_step"], ["CPUExecutionProvider"])
    x = random_inputs(ins, 6, 1, MODEL.cfg, torch.Generator().manual_seed(1))
    got = comp.run({k: v.numpy() for k, v in x.items()})["next_states"]
    assert got.dtype == np.float32
    with torch.no_grad():
        expected = build_graph(MODEL, "world_model_step")(x["states"], x["latents"]).numpy()
    err = np.abs(got - expected).max()
    assert TOLERANCES["fp32"] * output_scale(expected) < err <= TOLERANCES["fp16"] * output_scale(expected)
    assert next(MODEL.parameters()).dtype == torch.float32  # the source model was not cast


def test_a_damaged_onnx_file_is_refused_with_its_path(tmp_path: Path, world_model_onnx: Path) -> None:
    bad = tmp_path / "world_model.onnx"
    bad.write_bytes(world_model_onnx.read_bytes()[: 5000])
    ins, outs = SPECS["world_model"]
    with pytest.raises(RepositoryError, match=r"world_model.onnx cannot be loaded by onnxruntime .* re-export"):
        OrtComponent("world_model", bad, ins, outs, PROFILES["world_model"], ["CPUExecutionProvider"])


def test_every_arena_gives_the_same_numbers(world_model_onnx: Path) -> None:
    """Where the sessions' activation memory comes from (per session, shared, none) changes no output."""
    ins, outs = SPECS["world_model"]
    x = {k: v.numpy() for k, v in random_inputs(ins, 3, 4, MODEL.cfg, torch.Generator().manual_seed(1)).items()}
    got = {arena: OrtComponent("world_model", world_model_onnx, ins, outs, PROFILES["world_model"],
                               ["CPUExecutionProvider"], arena=arena).run(x)["predictions"]
           for arena in ("session", "shared", "off")}
    np.testing.assert_array_equal(got["shared"], got["session"])
    np.testing.assert_array_equal(got["off"], got["session"])
    with pytest.raises(ValueError, match="arena must be one of"):
        OrtComponent("world_model", world_model_onnx, ins, outs, PROFILES["world_model"], ["CPUExecutionProvider"],
                     arena="pooled")


def test_a_warping_world_model_exports_and_matches_torch(tmp_path: Path) -> None:
    """`world_model.warp` (interpolation weights built from floor/compare ops) through onnxruntime."""
    model = tiny_model(None, **{"model.world_model.warp": True})
    ins, outs = SPECS["world_model"]
    path = export_component(build_graph(model, "world_model"), ins, outs, PROFILES["world_model"], model.cfg,
                            tmp_path / "world_model.onnx")
    comp = OrtComponent("world_model", path, ins, outs, PROFILES["world_model"], ["CPUExecutionProvider"])
    x = random_inputs(ins, 3, 4, model.cfg, torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.world_model(x["states"], x["latents"]).numpy()
        assert not torch.allclose(model.world_model.base(x["states"], x["latents"]), x["states"], atol=1e-3)
    got = comp.run({k: v.numpy() for k, v in x.items()})["predictions"]
    assert np.abs(got - expected).max() <= TOLERANCES["fp32"] * output_scale(expected)


def test_a_correlation_fused_idm_exports_and_matches_torch(tmp_path: Path) -> None:
    """`idm.fusion: correlation` (padding and slices of the local correlation volume) through onnxruntime."""
    model = tiny_model(None, **{"model.idm.fusion": "correlation"})
    ins, outs = SPECS["idm"]
    path = export_component(build_graph(model, "idm"), ins, outs, PROFILES["idm"], model.cfg, tmp_path / "idm.onnx")
    comp = OrtComponent("idm", path, ins, outs, PROFILES["idm"], ["CPUExecutionProvider"])
    x = random_inputs(ins, 2, 4, model.cfg, torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = build_graph(model, "idm")(*x.values()).numpy()
    got = comp.run({k: v.numpy() for k, v in x.items()})["latents"]
    assert np.abs(got - expected).max() <= TOLERANCES["fp32"] * output_scale(expected)
