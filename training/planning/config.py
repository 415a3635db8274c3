"""Planner settings: one frozen, validated dataclass and the protocol presets.

`PlannerConfig` holds everything CEM and MPPI need; `__post_init__` rejects bad values with a
`ValueError` that names the field and its allowed range, so a request's settings fail loudly at the
edge of the service rather than deep inside a rollout. `PRESETS` carries the two evaluation
protocols of PAPER-NOTES §3.5 (DROID, CEM H=3 N=300 K=10 I=15) and §3.6 (RECON/NWM, one straight-line
action, N=120 K=5 I=1); `preset(name, **overrides)` copies one with changes and revalidates.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

Method = Literal["cem", "mppi"]
CostName = Literal["l1", "l2", "pixel"]
ContextName = Literal["full", "one-frame"]

METHODS = ("cem", "mppi")
COSTS = ("l1", "l2", "pixel")
CONTEXTS = ("full", "one-frame")
MAX_HORIZON = 64
MAX_SAMPLES = 4096
MAX_ITERATIONS = 100


def _is_int(x: Any) -> bool:
    # bool is an int subclass; `horizon=True` is a mistake, not a horizon of 1.
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _int_in(name: str, value: Any, lo: int, hi: int) -> None:
    if not _is_int(value) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")


def _float_tuple(name: str, value: Any) -> tuple[float, ...]:
    """A non-empty tuple of finite floats (lists are accepted and frozen into tuples)."""
    if not isinstance(value, tuple | list) or len(value) == 0:
        raise ValueError(f"{name} must be a non-empty tuple of finite numbers, got {value!r}")
    if not all(_is_number(v) and math.isfinite(v) for v in value):
        raise ValueError(f"{name} must contain only finite numbers, got {value!r}")
    return tuple(float(v) for v in value)


def _per_dim(name: str, value: Any, dims: int) -> tuple[float, ...]:
    """A scalar broadcast to every action dim, or one finite number per dim."""
    if _is_number(value):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        return (float(value),) * dims
    out = _float_tuple(name, value)
    if len(out) != dims:
        raise ValueError(f"{name} must have one value per action dim ({dims}), got {len(out)}")
    return out


@dataclass(frozen=True, kw_only=True)
class PlannerConfig:
    """Settings of one planning call. Actions are real (robot/navigation) actions, never latents.

    `action_low`/`action_high` fix the action dimension A; every sample is clipped into that box.
    `init_mean=None` starts the Gaussian at the centre of the box (0 for symmetric bounds, as the
    paper's "mean 0"). `init_std` and `init_mean` take a scalar or one value per action dim.
    `cost` names the cost the caller builds with `costs.get_cost`; the planner itself receives the
    callable, so the name is carried for callers (service, evaluation) rather than read here.
    `deadline_s` is seconds from the start of the call.
    `context` says which world-model step the caller builds: "full" keeps every candidate's context
    (all earlier predicted states, through a KV cache; the world model was trained block-causally
    on such contexts), "one-frame" predicts from the current state alone. Like `cost`, it is read
    by callers, since the planner only receives the step.
    """

    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    method: Method = "cem"
    horizon: int = 3
    samples: int = 300
    elites: int = 10
    iterations: int = 15
    init_std: float | tuple[float, ...] = 1.0
    init_mean: float | tuple[float, ...] | None = None
    momentum: float = 0.0
    straight_line: bool = False
    temperature: float = 1.0
    mppi_update_std: bool = True
    deadline_s: float | None = None
    seed: int = 0
    cost: CostName = "l2"
    # one-frame by default: measured as good as full context for the demo LAM and better for the
    # action-labelled WM, and cheaper (docs/results.md, "world-model context")
    context: ContextName = "one-frame"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.cost not in COSTS:
            raise ValueError(f"cost must be one of {COSTS}, got {self.cost!r}")
        if self.context not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, got {self.context!r}")
        _int_in("horizon", self.horizon, 1, MAX_HORIZON)
        _int_in("samples", self.samples, 1, MAX_SAMPLES)
        _int_in("elites", self.elites, 1, self.samples)
        _int_in("iterations", self.iterations, 1, MAX_ITERATIONS)
        _int_in("seed", self.seed, 0, 2**63 - 1)

        low = _float_tuple("action_low", self.action_low)
        high = _float_tuple("action_high", self.action_high)
        if len(low) != len(high):
            raise ValueError(
                f"action_low and action_high must have the same length, got {len(low)} and {len(high)}"
            )
        for i, (lo, hi) in enumerate(zip(low, high, strict=True)):
            if not lo < hi:
                raise ValueError(f"action_low[{i}] must be < action_high[{i}], got {lo} >= {hi}")
        dims = len(low)

        std = _per_dim("init_std", self.init_std, dims)
        if not all(s > 0 for s in std):
            raise ValueError(f"init_std must be > 0 (finite), got {self.init_std!r}")
        if self.init_mean is not None:
            mean = _per_dim("init_mean", self.init_mean, dims)
            for i, (m, lo, hi) in enumerate(zip(mean, low, high, strict=True)):
                if not lo <= m <= hi:
                    raise ValueError(
                        f"init_mean[{i}] must lie in [action_low, action_high] = [{lo}, {hi}], got {m}"
                    )
            object.__setattr__(self, "init_mean", mean)

        if not _is_number(self.momentum) or not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"momentum must be a number in [0, 1], got {self.momentum!r}")
        if not _is_number(self.temperature) or not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        if self.deadline_s is not None and (
            not _is_number(self.deadline_s) or not (math.isfinite(self.deadline_s) and self.deadline_s >= 0)
        ):
            raise ValueError(f"deadline_s must be None or a finite number >= 0, got {self.deadline_s!r}")
        if not isinstance(self.straight_line, bool):
            raise ValueError(f"straight_line must be a bool, got {self.straight_line!r}")
        if not isinstance(self.mppi_update_std, bool):
            raise ValueError(f"mppi_update_std must be a bool, got {self.mppi_update_std!r}")

        # Normalise to tuples of floats so equal configs compare (and hash) equal.
        object.__setattr__(self, "action_low", low)
        object.__setattr__(self, "action_high", high)
        object.__setattr__(self, "init_std", std)

    @property
    def action_dim(self) -> int:
        return len(self.action_low)

    def mean0(self) -> tuple[float, ...]:
        """The initial mean per action dim: `init_mean`, or the centre of the action box."""
        if self.init_mean is not None:
            return self.init_mean  # type: ignore[return-value]  # normalised to a tuple in __post_init__
        return tuple((lo + hi) / 2 for lo, hi in zip(self.action_low, self.action_high, strict=True))


PRESETS: dict[str, PlannerConfig] = {
    # PAPER-NOTES §3.5: CEM H=3, N=300, K=10, I=15, Gaussian at mean 0 with unit variance, L2 cost.
    # Bounds from the jepa-wms config's clipping: 0.1 for the xyz deltas, 0.75 for the gripper.
    # (That config samples with var_scale 0.1; the paper says unit variance — override init_std to
    # reproduce the config, since with std 1 most xyz samples land on the ±0.1 bounds.)
    "droid": PlannerConfig(
        method="cem",
        horizon=3,
        samples=300,
        elites=10,
        iterations=15,
        init_std=1.0,
        init_mean=0.0,
        momentum=0.0,
        action_low=(-0.1, -0.1, -0.1, -0.75),
        action_high=(0.1, 0.1, 0.1, 0.75),
        cost="l2",
    ),
    # PAPER-NOTES §3.6 (NWM protocol): one (forward, lateral, yaw) action per candidate, repeated over
    # the 8 steps (2 s at 4 fps); 120 candidates, top 5, a single iteration. Bounds suit the
    # navigation env (metres / radians per step); the std spans about half the box.
    "recon": PlannerConfig(
        method="cem",
        horizon=8,
        samples=120,
        elites=5,
        iterations=1,
        init_std=(0.25, 0.125, 0.25),
        init_mean=(0.25, 0.0, 0.0),
        momentum=0.0,
        straight_line=True,
        action_low=(0.0, -0.25, -0.5),
        action_high=(0.5, 0.25, 0.5),
        cost="l2",
    ),
}


# The preset each environment's planning protocol uses (the evaluation, the bench, the web console).
PRESET_FOR_ENV = {"manipulation": "droid", "navigation": "recon"}


def preset(name: str, **overrides: Any) -> PlannerConfig:
    """A copy of `PRESETS[name]` with `overrides` applied (and validated again)."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    fields = {f.name for f in dataclasses.fields(PlannerConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown planner setting(s) {unknown}; allowed: {sorted(fields)}")
    base = PRESETS[name]
    # New bounds may change the action dim: recentre the mean on the new box and keep a uniform std
    # scalar, so only genuinely per-dim settings (recon's std) need restating.
    if "action_low" in overrides or "action_high" in overrides:
        overrides.setdefault("init_mean", None)
        std = base.init_std
        if "init_std" not in overrides and isinstance(std, tuple) and len(set(std)) == 1:
            overrides["init_std"] = std[0]
    return dataclasses.replace(base, **overrides)
