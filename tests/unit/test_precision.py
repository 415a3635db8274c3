"""bf16 detection from CPU flags, the plan-parity check, and the per-component precision choice."""

from __future__ import annotations

import math

import pytest
import torch

from training.planning import Plan
from training.precision import (
    Bf16Support,
    at_precision,
    choose_precisions,
    cpu_bf16_support,
    plan_parity,
)

SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8 avx512_vnni\n"
ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n"
OLD = "processor\t: 0\nflags\t\t: fpu sse2 avx2\n"
LOW, HIGH = (0.0, -0.25, -0.5), (0.5, 0.25, 0.5)


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        (SAPPHIRE_RAPIDS, Bf16Support(amx=True, avx512_bf16=True), "amx"),
        (ZEN4, Bf16Support(amx=False, avx512_bf16=True), "avx512_bf16"),
        (OLD, Bf16Support(amx=False, avx512_bf16=False), "none"),
        ("", Bf16Support(amx=False, avx512_bf16=False), "none"),  # no /proc/cpuinfo: assume nothing
        ("flags\t: amx_bf16\n", Bf16Support(amx=False, avx512_bf16=False), "none"),  # no tiles, no AMX
    ],
)
def test_bf16_support_is_read_from_the_cpu_flags(text: str, expected: Bf16Support, kind: str) -> None:
    got = cpu_bf16_support(text)
    assert got == expected and got.kind == kind and got.available == (kind != "none")


def test_this_machine_is_detected_not_assumed() -> None:
    with open("/proc/cpuinfo") as f:
        flags = next((line for line in f if line.startswith("flags")), "").split()
    got = cpu_bf16_support()
    assert got.amx == ("amx_bf16" in flags and "amx_tile" in flags) and got.avx512_bf16 == ("avx512_bf16" in flags)


def plan_of(first: tuple[float, ...], cost: float) -> Plan:
    actions = torch.tensor([first, first])
    return Plan(actions, actions, cost, 1, 1, {}, False)


def test_plan_parity_checks_the_first_action_against_the_box_and_the_cost_to_one_percent() -> None:
    ref = plan_of((0.25, 0.0, 0.1), 2.0)
    assert plan_parity(ref, plan_of((0.2545, 0.0, 0.1), 2.019), LOW, HIGH).passed  # 0.9% of 0.5, 0.95%
    moved = plan_parity(ref, plan_of((0.25, 0.0, 0.12), 2.0), LOW, HIGH)  # 2% of the yaw range
    assert not moved.passed and moved.first_action_err == pytest.approx(0.02, rel=1e-4)
    dearer = plan_parity(ref, plan_of((0.25, 0.0, 0.1), 2.03), LOW, HIGH)
    assert not dearer.passed and dearer.cost_rel_err == pytest.approx(0.015, rel=1e-4)
    assert plan_parity(plan_of((0.25, 0.0, 0.1), math.inf), plan_of((0.25, 0.0, 0.1), math.inf), LOW, HIGH).passed


def test_components_are_lowered_one_by_one_and_kept_only_where_every_plan_passes() -> None:
    """A fake planner whose plan moves when the controller is lowered, not when the world model is."""
    calls = []

    def plan_with(precisions: dict[str, str], problem: float) -> Plan:
        calls.append(dict(precisions))
        shift = 0.05 if precisions["controller"] == "bf16" and problem > 1 else 0.0  # one problem of two breaks
        return plan_of((0.25 + shift, 0.0, 0.0), problem * (1.001 if precisions["world_model"] == "bf16" else 1.0))

    choice = choose_precisions(plan_with, [1.0, 2.0], LOW, HIGH)
    assert choice.precisions == {"world_model": "bf16", "controller": "fp32"}
    assert [t["passed"] for t in choice.trials] == [True, False]
    assert choice.trials[1]["precisions"] == {"world_model": "bf16", "controller": "bf16"}  # tried on top of the kept one
    assert calls[:2] == [{"world_model": "fp32", "controller": "fp32"}] * 2  # the references first
    assert choice.to_json()["precisions"] == choice.precisions
    with pytest.raises(ValueError, match="at least one problem"):
        choose_precisions(plan_with, [], LOW, HIGH)


@torch.no_grad()
def test_bf16_really_runs_the_matmuls_in_bf16_and_returns_fp32() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 64)
    x = torch.randn(8, 64)
    exact, low = layer(x), at_precision(layer, "bf16")(x)
    assert low.dtype == torch.float32
    err = float((low - exact).abs().max())
    assert 0 < err < 0.05  # rounded to 8 mantissa bits, but the same function
    assert at_precision(layer, "fp32") is layer
