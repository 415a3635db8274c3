"""The parity check itself: it passes the model against itself and catches a different one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exporters.components import Profile, build_graph, component_specs, default_profiles
from exporters.parity import RealInputs, check_components, compare, failures
from exporters.torch_runtime import TorchComponent
from tests.unit.exporters.tiny import tiny_model

MODEL = tiny_model("mlp")
SPECS = component_specs(MODEL.cfg, 3)
# Small profiles keep these fast; the exports themselves are checked at the real ones (integration).
PROFILES = {c: Profile((1, 2, 6), p.time and (p.time[0], 4, 4)) for c, p in default_profiles(MODEL.cfg).items()}


def candidates(model: torch.nn.Module, names: tuple[str, ...]) -> dict[str, TorchComponent]:
    return {c: TorchComponent(c, build_graph(model, c), *SPECS[c], PROFILES[c]) for c in names}


def real_inputs() -> RealInputs:
    rng = np.random.default_rng(0)
    video = rng.random((3, 6, 3, 32, 32), dtype=np.float32)  # stands in for decoded frames here
    return RealInputs(MODEL, video, "test frames")


def test_the_reference_passes_against_itself_at_batch_1_and_the_profile_max() -> None:
    report = check_components(MODEL, candidates(MODEL, ("idm", "controller")), PROFILES, real=real_inputs())
    assert report["passed"] and not failures(report)
    seen = {(c["component"], c["inputs"], c["batch"]) for c in report["cases"]}
    assert ("controller", "real", 6) in seen and ("idm", "random", 1) in seen and ("idm", "real", 6) in seen
    assert all(c["max_abs_err"] <= 1e-6 for c in report["cases"])


def test_a_slightly_different_model_fails_and_is_named() -> None:
    other = tiny_model("mlp")
    with torch.no_grad():
        other.world_model.proj_out.bias.add_(1e-2)  # a shift of 1% of the scale: 100x the fp32 bound
    report = check_components(MODEL, candidates(other, ("idm", "world_model")), PROFILES)
    assert not report["passed"]
    bad = failures(report)
    assert bad and all(line.startswith("world_model (random") for line in bad)


def test_real_inputs_feed_every_component_the_right_shapes() -> None:
    real = real_inputs()
    assert real.steps == 3
    for name, (ins, _) in SPECS.items():
        x = real.for_component(name, 5)
        assert sorted(x) == sorted(s.name for s in ins)
        assert all(v.shape[0] == 5 and v.dtype == torch.float32 for v in x.values())


@pytest.mark.parametrize(
    ("got", "passed"),
    [(np.array([1.0, 2.0 + 1e-5]), True), (np.array([1.0, 2.001]), False), (np.array([1.0, np.nan]), False),
     (np.array([1.0]), False)],
)
def test_compare_bounds_the_error_by_the_output_scale(got: np.ndarray, passed: bool) -> None:
    case = compare("x", "random", 1, None, np.array([1.0, 2.0]), got, 1e-4)
    assert case.scale == 2.0 and case.passed is passed
