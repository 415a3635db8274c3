"""bf16 on the torch runtime: a component really runs its matmuls in bf16, returns fp32, and the
precision asked for is checked (names, values, runtime) before anything is loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from exporters.components import Profile, TensorSpec
from exporters.errors import ExportError, RepositoryError
from exporters.precision_choice import (
    DEFAULT,
    EXPORT,
    PLANNER_COMPONENTS,
    SETTING,
    expand_parts,
    resolve_precisions,
)
from exporters.runtime import LoadedModel, load_checkpoint_model
from exporters.torch_runtime import TorchComponent
from tests.unit.exporters.tiny import tiny_checkpoint

ALL = ("encoder", "idm", "world_model", "world_model_step", "world_model_prefill", "world_model_kv_step", "decoder", "controller")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", controller="state")


@pytest.fixture(scope="module")
def fp32(checkpoint: Path) -> LoadedModel:
    return load_checkpoint_model(checkpoint)


@pytest.fixture(scope="module")
def bf16(checkpoint: Path) -> LoadedModel:
    return load_checkpoint_model(checkpoint, precision="bf16")


def step_inputs(model: LoadedModel, batch: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n, d, z = model.config.encoder.tokens, model.config.encoder.dim, model.config.idm.latent_dim
    return {"states": rng.standard_normal((batch, n, d)).astype(np.float32),
            "latents": rng.standard_normal((batch, z)).astype(np.float32)}


def test_bf16_applies_to_the_planner_components_only(fp32: LoadedModel, bf16: LoadedModel) -> None:
    assert (fp32.precision, fp32.precision_source) == (dict.fromkeys(ALL, "fp32"), DEFAULT)
    assert bf16.precision_source == SETTING
    assert {c for c, p in bf16.precision.items() if p == "bf16"} == set(PLANNER_COMPONENTS)
    assert {c: comp.precision for c, comp in bf16.components.items()} == bf16.precision  # type: ignore[attr-defined]


def test_a_bf16_component_returns_fp32_close_to_fp32_but_not_equal(fp32: LoadedModel, bf16: LoadedModel) -> None:
    x = step_inputs(fp32)
    exact = fp32.components["world_model_step"].run(x)["next_states"]
    low = bf16.components["world_model_step"].run(x)["next_states"]
    assert low.dtype == np.float32 and low.shape == exact.shape
    err = float(np.abs(low - exact).max()) / max(1.0, float(np.abs(exact).max()))
    assert 0 < err < 0.05  # rounded to bf16's 8 mantissa bits inside, the same function
    torch_out = bf16.components["world_model_step"].run_torch(**{k: torch.from_numpy(v) for k, v in x.items()})
    assert isinstance(torch_out, torch.Tensor) and torch_out.dtype == torch.float32
    np.testing.assert_array_equal(torch_out.numpy(), low)
    # the encoder was not lowered: bitwise the fp32 answer
    px = fp32.config.encoder.image_size
    video = np.random.default_rng(1).random((2, 2, 3, px, px), dtype=np.float32)
    np.testing.assert_array_equal(bf16.components["encoder"].run({"video": video})["states"],
                                  fp32.components["encoder"].run({"video": video})["states"])


def test_the_key_value_components_return_fp32_caches_in_bf16(bf16: LoadedModel) -> None:
    x = step_inputs(bf16, batch=2)
    out = bf16.components["world_model_prefill"].run({"states": x["states"][:, None], "latents": x["latents"][:, None]})
    assert {v.dtype for v in out.values()} == {np.dtype(np.float32)}
    keys = bf16.components["world_model_prefill"].run_torch(
        states=torch.from_numpy(x["states"][:, None]), latents=torch.from_numpy(x["latents"][:, None]))
    assert isinstance(keys, tuple) and all(t.dtype == torch.float32 for t in keys)


class AutocastProbe(torch.nn.Module):
    """Records the autocast state it was called under, and computes a matmul."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(16, 16, generator=torch.Generator().manual_seed(0)))
        self.seen: list[tuple[bool, torch.dtype, torch.dtype]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.weight
        self.seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), y.dtype))
        return y


@pytest.mark.parametrize(("precision", "enabled", "matmul"), [("fp32", False, torch.float32), ("bf16", True, torch.bfloat16)])
def test_a_component_calls_its_module_under_the_precisions_autocast(precision: str, enabled: bool, matmul: torch.dtype) -> None:
    probe = AutocastProbe()
    spec_in, spec_out = TensorSpec("x", "float32", ("batch", 16)), TensorSpec("y", "float32", ("batch", 16))
    comp = TorchComponent("probe", probe, (spec_in,), (spec_out,), Profile((1, 4, 8)), precision=precision)
    out = comp.run({"x": np.ones((2, 16), np.float32)})["y"]
    assert out.dtype == np.float32
    assert probe.seen[-1][0] is enabled and probe.seen[-1][2] == matmul
    assert probe.seen[-1][1] == torch.bfloat16 or not enabled
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks out of the call
    with pytest.raises(ExportError, match="precision must be one of"):
        TorchComponent("probe", probe, (spec_in,), (spec_out,), Profile((1, 4, 8)), precision="fp16")


def test_asked_precisions_are_checked_by_name_value_and_runtime(tmp_path: Path) -> None:
    assert resolve_precisions(None, ALL, "torch") == (dict.fromkeys(ALL, "fp32"), DEFAULT)
    assert resolve_precisions("auto", ALL, "torch", tmp_path) == (dict.fromkeys(ALL, "fp32"), DEFAULT)  # nothing recorded
    per, source = resolve_precisions({"world_model": "bf16"}, ALL, "torch")
    assert source == SETTING and per["world_model"] == "bf16" and per["world_model_step"] == "fp32"
    with pytest.raises(RepositoryError, match=r"unknown component\(s\) \['world_modle'\]"):
        resolve_precisions({"world_modle": "bf16"}, ALL, "torch")
    with pytest.raises(RepositoryError, match="precision must be one of"):
        resolve_precisions({"controller": "fp16"}, ALL, "torch")
    with pytest.raises(RepositoryError, match="precision must be one of"):
        resolve_precisions("half", ALL, "torch")
    for runtime in ("onnxruntime", "tensorrt"):
        with pytest.raises(RepositoryError, match="use runtime torch"):
            resolve_precisions("bf16", ALL, runtime)
        with pytest.raises(RepositoryError, match="use runtime torch"):
            resolve_precisions({"controller": "bf16"}, ALL, runtime)
    # off torch nothing changes: the graphs run as exported, and say so
    assert resolve_precisions("auto", ALL, "onnxruntime", export_precision="fp16") == (dict.fromkeys(ALL, "fp16"), EXPORT)


def test_planner_parts_expand_to_the_components_the_model_has() -> None:
    assert expand_parts({"world_model": "bf16", "controller": "fp32"}, ALL) == {
        "world_model_step": "bf16", "world_model_prefill": "bf16", "world_model_kv_step": "bf16", "controller": "fp32",
    }
    old_export = ("encoder", "world_model_step", "controller")  # before the key/value cache
    assert expand_parts({"world_model": "bf16"}, old_export) == {"world_model_step": "bf16"}
    with pytest.raises(ValueError, match="unknown planner part"):
        expand_parts({"decoder": "bf16"}, ALL)
