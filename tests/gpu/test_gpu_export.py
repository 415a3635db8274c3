"""The GPU path on the bundled demo model: CUDA torch vs onnxruntime, reduced precision on CUDA,
TensorRT engines and onnxruntime's CUDA / TensorRT providers when installed.

Skipped without CUDA (tests/conftest.py). `scripts/gpu-check.sh` runs these with LAWM_GPU_REPO
pointing at the repository it exported, so the demo is exported once.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch

from exporters.components import build_graph, component_specs, default_profiles
from exporters.errors import EngineMismatchError
from exporters.onnx_export import cast_graph
from exporters.parity import check_components, failures
from exporters.runtime import LoadedModel, load_model
from exporters.torch_runtime import TorchComponent, build_model

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo"


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return build_model(DEMO)[0]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("LAWM_GPU_REPO")
    if given:
        return Path(given)
    from exporters.export import export_model

    out = tmp_path_factory.mktemp("repo")
    export_model(DEMO, out, name="demo", device="cuda")
    return out


@pytest.fixture(scope="module")
def onnx_cpu(repo: Path) -> LoadedModel:
    return load_model(repo, "demo", runtime="onnxruntime", device="cpu")


def test_cuda_torch_and_onnxruntime_both_meet_the_fp32_bound(model: torch.nn.Module, onnx_cpu: LoadedModel) -> None:
    """Both against the float64 reference on CUDA, at batch 1 and each profile's max."""
    cuda = load_model_torch_cuda(model)
    profiles = onnx_cpu.profiles
    for name, runtime in (("onnxruntime (CPU)", onnx_cpu.components), ("torch CUDA fp32", cuda)):
        report = check_components(model, dict(runtime), profiles, "fp32", device="cuda")
        assert report["passed"], f"{name}: " + "; ".join(failures(report))


def load_model_torch_cuda(model: torch.nn.Module) -> dict[str, TorchComponent]:
    model = copy.deepcopy(model)  # TorchComponent moves its module; keep the fixture's on the CPU
    specs, profiles = component_specs(model.cfg), default_profiles(model.cfg)
    return {c: TorchComponent(c, build_graph(model, c), *specs[c], profiles[c], device="cuda") for c in specs}


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_on_cuda_meets_its_documented_bound(model: torch.nn.Module, precision: str) -> None:
    specs, profiles = component_specs(model.cfg), default_profiles(model.cfg)
    candidates = {
        c: TorchComponent(c, cast_graph(build_graph(model, c), precision, ins), ins, outs, profiles[c], device="cuda")
        for c, (ins, outs) in specs.items()
    }
    report = check_components(model, candidates, profiles, precision, device="cuda")
    worst = max(c["max_abs_err"] / c["scale"] for c in report["cases"])
    assert report["passed"], f"{precision} worst err/scale {worst:.4g}: " + "; ".join(failures(report))
    assert worst > 1e-5  # really ran in reduced precision


def test_onnxruntime_cuda_provider_when_installed(repo: Path, onnx_cpu: LoadedModel) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (onnxruntime-gpu not installed)")
    gpu = load_model(repo, "demo", runtime="onnxruntime", device="cuda")
    assert gpu.components["idm"].session.get_providers()[0] == "CUDAExecutionProvider"  # type: ignore[attr-defined]
    report = check_components(build_model(DEMO)[0], dict(gpu.components), gpu.profiles, "fp32", device="cuda")
    assert report["passed"], "; ".join(failures(report))


def test_tensorrt_engines_build_check_and_refuse_another_gpu(tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="tensorrt not installed")
    import json
    import shutil

    from exporters.export import export_model

    built = os.environ.get("LAWM_GPU_TRT_REPO")  # version 2 of the demo, built by scripts/gpu-check.sh
    if built:
        shutil.copytree(built, tmp_path / "repo")
        folder = tmp_path / "repo" / "demo" / "2"
    else:
        folder = export_model(DEMO, tmp_path / "repo", name="demo", fmt="tensorrt", precision="fp16", device="cuda")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["parity"]["tensorrt"]["passed"] and manifest["tensorrt"]["compute_capability"]
    trt_model = load_model(tmp_path / "repo", "demo", version=int(folder.name), runtime="tensorrt", device="cuda")
    out = trt_model.components["world_model_step"].run(
        {"states": torch.randn(300, 64, 128).numpy(), "latents": torch.randn(300, 128).numpy()}
    )
    assert out["next_states"].shape == (300, 64, 128)
    manifest["tensorrt"]["gpu"] = "Some Other GPU"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineMismatchError, match="Some Other GPU"):
        load_model(tmp_path / "repo", "demo", version=int(folder.name), runtime="tensorrt", device="cuda")
