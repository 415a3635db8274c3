"""Reduced precision for the planner's components, chosen by what it does to the plan.

- `cpu_bf16_support()` reads the CPU's flags: AMX (`amx_bf16`: bf16 matrix tiles, several times
  the fp32 GEMM rate) or AVX-512 BF16 (`avx512_bf16`: bf16 dot products, a smaller gain). Detect,
  never assume: machines of one fleet differ.
- `plan_parity(reference, candidate)` compares two plans of the same problem and seed: the first
  action (what a robot executes) within a tolerance of the action box, and the cost within 1%.
- `choose_precisions(...)` tries bf16 component by component (the world model first: it is most of
  a plan's time) and keeps it only where every check problem's plan still passes `plan_parity`
  against the all-fp32 plan, with the components already lowered kept lowered.

Precision here is torch autocast around a component's calls (matmuls in bf16, norms and softmax
in fp32, fp32 out), so one set of fp32 weights serves every choice.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

PRECISIONS = ("fp32", "bf16")
FIRST_ACTION_TOL = 0.01  # of each action dimension's range (high - low)
COST_RTOL = 0.01


@dataclass(frozen=True)
class Bf16Support:
    amx: bool  # amx_bf16 (with amx_tile): bf16 tile matmuls
    avx512_bf16: bool  # bf16 dot products in AVX-512 registers

    @property
    def available(self) -> bool:
        """bf16 runs natively (not emulated through fp32)."""
        return self.amx or self.avx512_bf16

    @property
    def kind(self) -> str:
        return "amx" if self.amx else "avx512_bf16" if self.avx512_bf16 else "none"


def cpu_bf16_support(cpuinfo: str | None = None) -> Bf16Support:
    """What this CPU offers for bf16, from the `flags` line of /proc/cpuinfo (or the text given).

    Where /proc/cpuinfo cannot be read (not Linux), nothing is assumed: both are False."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    match = re.search(r"^flags\s*:(.*)$", cpuinfo, flags=re.MULTILINE)
    flags = set(match.group(1).split()) if match else set()
    return Bf16Support(amx={"amx_bf16", "amx_tile"} <= flags, avx512_bf16="avx512_bf16" in flags)


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the enclosed component calls at `precision` ("fp32": as they are)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
        yield


def at_precision(fn: Callable[..., Any], precision: str) -> Callable[..., Any]:
    """`fn` run under `autocast(precision)` on its first tensor argument's device, float tensors out in fp32."""
    if precision == "fp32":
        return fn

    def wrapped(*args: Any) -> Any:
        device = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
        with autocast(precision, device):
            out = fn(*args)
        return out.float() if isinstance(out, torch.Tensor) and out.is_floating_point() else out

    return wrapped


@dataclass(frozen=True)
class PlanParity:
    first_action_err: float  # max over action dims of |Δ first action| / (high - low)
    cost_rel_err: float  # |Δ cost| / max(|reference cost|, tiny)
    first_action_tol: float
    cost_rtol: float

    @property
    def passed(self) -> bool:
        return self.first_action_err <= self.first_action_tol and self.cost_rel_err <= self.cost_rtol


def plan_parity(
    reference: Any, candidate: Any, action_low: Sequence[float], action_high: Sequence[float],
    first_action_tol: float = FIRST_ACTION_TOL, cost_rtol: float = COST_RTOL,
) -> PlanParity:
    """Compare two `training.planning.Plan`s of one problem (same start, goal, settings and seed)."""
    span = torch.tensor(action_high, dtype=torch.float32) - torch.tensor(action_low, dtype=torch.float32)
    delta = (candidate.first_action.float().cpu() - reference.first_action.float().cpu()).abs() / span
    ref_cost, cand_cost = float(reference.cost), float(candidate.cost)
    # equal costs agree, both inf (nothing evaluated) included
    cost_err = 0.0 if ref_cost == cand_cost else abs(cand_cost - ref_cost) / max(abs(ref_cost), 1e-12)
    return PlanParity(float(delta.max()), cost_err, first_action_tol, cost_rtol)


@dataclass
class PrecisionChoice:
    precisions: dict[str, str]  # component -> "fp32" | "bf16"
    trials: list[dict[str, Any]] = field(default_factory=list)  # every assignment tried and its worst parity

    def to_json(self) -> dict[str, Any]:
        return {"precisions": dict(self.precisions), "trials": list(self.trials)}


def choose_precisions(
    plan_with: Callable[[dict[str, str], Any], Any],
    problems: Sequence[Any],
    action_low: Sequence[float],
    action_high: Sequence[float],
    components: Sequence[str] = ("world_model", "controller"),
    lower: str = "bf16",
    first_action_tol: float = FIRST_ACTION_TOL,
    cost_rtol: float = COST_RTOL,
) -> PrecisionChoice:
    """Lower components one at a time, in `components` order, keeping each where the plan passes.

    `plan_with(precisions, problem) -> Plan` plans one problem (start, goal, seed: whatever the
    caller needs) with `precisions` mapping every component to "fp32" or `lower`. A component stays
    lowered only if every problem's plan passes `plan_parity` against the all-fp32 plan."""
    if lower not in PRECISIONS:
        raise ValueError(f"lower must be one of {PRECISIONS}, got {lower!r}")
    if not problems:
        raise ValueError("choose_precisions needs at least one problem to check plans on")
    chosen = dict.fromkeys(components, "fp32")
    references = [plan_with(dict(chosen), p) for p in problems]
    result = PrecisionChoice(dict(chosen))
    for component in components:
        trial = {**chosen, component: lower}
        checks = [
            plan_parity(ref, plan_with(dict(trial), p), action_low, action_high, first_action_tol, cost_rtol)
            for ref, p in zip(references, problems, strict=True)
        ]
        passed = all(c.passed for c in checks)
        worst_action = max(c.first_action_err for c in checks)
        worst_cost = max(c.cost_rel_err for c in checks)
        result.trials.append({
            "precisions": dict(trial), "passed": passed, "first_action_err": worst_action, "cost_rel_err": worst_cost,
            "checks": [asdict(c) | {"passed": c.passed} for c in checks],
        })
        if passed:
            chosen = trial
    result.precisions = chosen
    return result
