"""Component specs and the input checks every runtime applies."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporters.components import (
    ALL_COMPONENTS,
    Profile,
    TensorSpec,
    check_inputs,
    component_specs,
    default_profiles,
    spec_shape,
)
from exporters.errors import InvalidInputs
from tests.unit.exporters.tiny import tiny_model_config

CFG = tiny_model_config()
SPECS = component_specs(CFG, action_dim=3)


def arrays(specs: tuple[TensorSpec, ...], batch: int, steps: int) -> dict[str, np.ndarray]:
    return {s.name: np.zeros(spec_shape(s, batch, steps, CFG), np.float32) for s in specs}


def test_every_component_is_described_and_the_controller_only_with_an_action_size() -> None:
    assert tuple(SPECS) == ALL_COMPONENTS
    assert "controller" not in component_specs(CFG)
    for inputs, outputs in SPECS.values():
        assert all(s.dtype == "float32" and s.shape[0] == "batch" for s in (*inputs, *outputs))
    assert SPECS["encoder"][0][0].shape == ("batch", "2*steps", 3, 32, 32)
    assert SPECS["idm"][1][0].shape == ("batch", "steps-1", 16)


def test_profiles_span_the_serving_and_planner_batches() -> None:
    profiles = default_profiles(CFG)
    assert profiles["world_model"] == Profile((1, 8, 32), (1, 8, 8))
    assert profiles["idm"].time == (2, 8, 8)  # a latent needs two states
    assert profiles["world_model_step"].max_batch >= 300  # one DROID-preset plan (300 candidates) per call


@settings(max_examples=40, deadline=None)
@given(component=st.sampled_from(ALL_COMPONENTS), batch=st.integers(1, 9), steps=st.integers(2, 8))
def test_well_formed_inputs_pass_and_bind_their_axes(component: str, batch: int, steps: int) -> None:
    inputs, _ = SPECS[component]
    bound = check_inputs(component, inputs, arrays(inputs, batch, steps), default_profiles(CFG)[component])
    assert bound["batch"] == batch
    if any(isinstance(a, str) and "steps" in a for s in inputs for a in s.shape):
        assert bound["steps"] == steps


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 6), other=st.integers(1, 6))
def test_inputs_that_disagree_on_the_batch_are_refused(batch: int, other: int) -> None:
    inputs, _ = SPECS["world_model_step"]
    x = {"states": np.zeros((batch, 16, 32), np.float32), "latents": np.zeros((other, 16), np.float32)}
    if batch == other:
        check_inputs("world_model_step", inputs, x)
    else:
        with pytest.raises(InvalidInputs, match="disagree on 'batch'"):
            check_inputs("world_model_step", inputs, x)


def test_batch_above_the_profile_is_refused_only_where_the_runtime_cannot_run_it() -> None:
    inputs, _ = SPECS["controller"]
    x = arrays(inputs, 600, 1)
    profile = default_profiles(CFG)["controller"]
    check_inputs("controller", inputs, x, profile)  # onnxruntime / torch: any batch
    with pytest.raises(InvalidInputs, match="exceeds the engine's profile max 512"):
        check_inputs("controller", inputs, x, profile, limit_batch=True)  # a TensorRT engine
