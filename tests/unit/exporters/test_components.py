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
    profile = default_profiles(CFG)[component]
    steps = min(steps, profile.time[2]) if profile.time else steps  # the cached step holds at most S-1 frames
    bound = check_inputs(component, inputs, arrays(inputs, batch, steps), profile)
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


def test_the_key_value_components_carry_every_block_s_cache_with_whole_frames() -> None:
    wm = CFG.world_model
    dh = wm.dim // wm.heads
    prefill_in, prefill_out = SPECS["world_model_prefill"]
    step_in, step_out = SPECS["world_model_kv_step"]
    assert [s.name for s in prefill_out] == ["next_states", "present_keys", "present_values"]
    assert [s.name for s in step_in] == ["states", "latents", "past_keys", "past_values"]
    assert step_in[2].shape == ("batch", wm.depth, wm.heads, "16*steps", dh)  # N = 16 tokens per frame
    assert step_out[1].shape == ("batch", wm.depth, wm.heads, "16*steps+16", dh)
    assert spec_shape(step_in[2], 3, 5, CFG) == (3, wm.depth, wm.heads, 80, dh)
    profiles = default_profiles(CFG)
    assert profiles["world_model_prefill"].time == (1, 4, 8) and profiles["world_model_kv_step"].time == (1, 4, 7)
    x = arrays(step_in, 2, 3)
    assert check_inputs("world_model_kv_step", step_in, x, profiles["world_model_kv_step"]) == {"batch": 2, "steps": 3}
    x["past_keys"] = np.zeros((2, wm.depth, wm.heads, 40, dh), np.float32)  # 2.5 frames
    with pytest.raises(InvalidInputs, match="must be a multiple of 16"):
        check_inputs("world_model_kv_step", step_in, x)
    x["past_keys"] = np.zeros((2, wm.depth, wm.heads, 32, dh), np.float32)  # keys of 2 frames, values of 3
    with pytest.raises(InvalidInputs, match="disagree on 'steps'"):
        check_inputs("world_model_kv_step", step_in, x)


def test_engine_profiles_cover_the_caches_from_one_frame_to_the_window_within_the_memory_budget() -> None:
    from exporters.components import KV_BUDGET_BYTES, kv_row_bytes, profile_shapes
    from training.config import load_config

    wm = CFG.world_model
    step_in, _ = SPECS["world_model_kv_step"]
    lo, opt, hi = profile_shapes(step_in[2], default_profiles(CFG)["world_model_kv_step"], CFG)
    assert lo == (1, wm.depth, wm.heads, 16, wm.dim // wm.heads)  # one cached frame, one row
    assert hi == (512, wm.depth, wm.heads, 16 * 7, wm.dim // wm.heads)  # the planner's batch at S-1 frames
    assert lo <= opt <= hi
    # a paper-sized world model cannot hold 512 rows of 16-frame caches: its batch is capped by the budget
    paper = load_config("paper").model
    profile = default_profiles(paper)["world_model_kv_step"]
    rows = profile.max_batch
    assert 1 <= rows < 512 and 2 * rows * kv_row_bytes(paper, paper.world_model.max_steps) <= KV_BUDGET_BYTES
    assert profile.batch[0] <= profile.batch[1] <= profile.batch[2]
