"""POST /v1/plan's search: `training.planning.plan` run in a worker thread, its world model on the engine.

The planner is synchronous torch code. It runs in a thread of its own (`PlanSlots`), and its
`step(states, actions)` is `exporters.runtime.action_step` over an `EngineBridge`, so the controller
and world-model calls of concurrent plans (and of other requests) meet in the same batches, at
`Priority.PLAN`. A plan whose client went away is stopped at its next step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from exporters.runtime import HistoryKvPlannerStep, KvPlannerStep, action_step
from service.inference.bridge import EngineBridge
from service.inference.engine import Engine
from service.inference.errors import DeadlineExceeded, PlanRejected, TooManyPlans
from service.inference.queue import Priority
from service.inference.threads import worker_pool
from training.planning import PRESETS, Plan, PlannerConfig, SearchStopped, get_cost, plan, preset

PLANNER_FIELDS = {f.name for f in dataclasses.fields(PlannerConfig)}


def _field_of(message: str) -> str:
    """The PlannerConfig field a validation message starts with ("horizon must be ..." -> "horizon")."""
    word = message.split(" ", 1)[0].split("[", 1)[0]
    return word if word in PLANNER_FIELDS else "overrides"


def planner_config(
    preset_name: str | None,
    action_dim: int,
    bounds: tuple[list[float], list[float]] | None,
    overrides: dict[str, Any],
    max_rows: int,
) -> PlannerConfig:
    """The request's planner settings, validated; a bad value is refused naming its field."""
    if preset_name is None:
        matching = [name for name, cfg in PRESETS.items() if cfg.action_dim == action_dim]
        if not matching and bounds is None:
            raise PlanRejected(
                "invalid_planner_settings",
                f"the controller takes {action_dim}-d actions and no preset has that size "
                f"({ {n: c.action_dim for n, c in PRESETS.items()} })",
                f"give action_low and action_high ({action_dim} numbers each), and a preset to start from",
            )
        preset_name = matching[0] if matching else "droid"
    if bounds is not None and any(len(b) != action_dim for b in bounds):
        raise PlanRejected(
            "wrong_action_dim",
            f"action_low/action_high have {len(bounds[0])} and {len(bounds[1])} values but the model's controller "
            f"takes {action_dim}-d actions",
            f"give action_low and action_high with {action_dim} numbers each",
        )
    settings = dict(overrides)
    if bounds is not None:
        settings["action_low"], settings["action_high"] = bounds
    try:
        cfg = preset(preset_name, **settings)
    except (ValueError, TypeError) as err:
        field_name = _field_of(str(err))
        raise PlanRejected(
            "invalid_planner_settings",
            f"{'overrides.' if field_name in overrides else ''}{field_name}: {err}",
            "fix that setting (GET /v1/models lists the presets and their values)",
        ) from err
    if cfg.action_dim != action_dim:
        raise PlanRejected(
            "wrong_action_dim",
            f"action_low/action_high: the plan would search {cfg.action_dim}-d actions but the model's controller "
            f"takes {action_dim}-d actions",
            f"give action_low and action_high with {action_dim} numbers each, or the preset made for this robot",
        )
    rows = cfg.samples * cfg.horizon * cfg.iterations
    if rows > max_rows:
        raise PlanRejected(
            "plan_too_large",
            f"samples x horizon x iterations = {cfg.samples} x {cfg.horizon} x {cfg.iterations} = {rows} world-model "
            f"evaluations; this server allows at most {max_rows} per plan",
            "lower samples, horizon or iterations (LAWM_MAX_PLAN_ROWS sets the limit)",
        )
    return cfg


class PlanSlots:
    """At most `limit` plans at once (each holds a thread); more are answered 429 at once rather
    than queued where no one can see them."""

    def __init__(self, limit: int, nice: int = 0) -> None:
        """`nice`: the search threads run this much below the event loop (service.inference.threads)."""
        self.limit = limit
        self.active = 0
        self.executor = worker_pool(limit, "planner", nice)

    def acquire(self) -> None:
        if self.active >= self.limit:
            raise TooManyPlans(self.active)
        self.active += 1

    def release(self) -> None:
        self.active -= 1

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


async def run_plan(
    engine: Engine,
    slots: PlanSlots,
    cfg: PlannerConfig,
    state: np.ndarray,
    goal: np.ndarray,
    soft_deadline: float | None,
    hard_deadline: float | None,
    initial_mean: np.ndarray | None = None,
    history: tuple[np.ndarray, np.ndarray] | None = None,
    priority: Priority = Priority.PLAN,
) -> tuple[Plan, dict[str, float]]:
    """Search from `state` `[N, D]` towards `goal` `[N, D]`; returns the plan and per-component seconds.

    `initial_mean` `[H, A]` warm-starts the search (a session's previous plan, shifted); `history`
    (observed states `[K, N, D]` before `state` and the latents between them and up to `state`) is
    the world model's context ahead of every candidate (full-context planning only).
    `soft_deadline` stops iterating (the best plan so far is returned); `hard_deadline` bounds each
    engine call. Both are absolute `time.monotonic()` values. A call refused or failed at the hard
    deadline ends the search with the iterations that finished (`deadline_hit`); when none did there
    is no plan to give, and the answer is DeadlineExceeded (504). `priority`: the batchers' queue
    level of every engine call (session steps run above plans)."""
    bridge = EngineBridge(engine, asyncio.get_running_loop(), priority, hard_deadline)
    if cfg.cost == "pixel":
        engine.require("decoder")

    def call(component: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return bridge.call(component, inputs)
        except DeadlineExceeded as err:  # at most one batch late: stop with the best plan so far
            raise SearchStopped(str(err)) from err

    def decode(states: torch.Tensor) -> torch.Tensor:
        """For the pixel cost: states `[B, N, D]` -> the first decoded frame of each `[B, 3, H, W]`."""
        s = states.detach().to(torch.float32).contiguous().numpy()[:, None]  # [B, 1, N, D]
        return torch.from_numpy(call("decoder", {"states": s})["frames"][:, 0])

    cost = get_cost(cfg.cost, decode=decode if cfg.cost == "pixel" else None)
    slots.acquire()
    try:
        search = functools.partial(
            plan, planner_step_of(engine, call, cfg, history), cost, torch.from_numpy(state), torch.from_numpy(goal), cfg,
            deadline_at=soft_deadline,
            initial_mean=None if initial_mean is None else torch.from_numpy(np.asarray(initial_mean, np.float32)),
        )
        result = await bridge.run(search, executor=slots.executor)
    except ValueError as err:  # the planner's own input checks (shapes, NaN)
        raise PlanRejected("invalid_plan_inputs", str(err)) from err
    finally:
        slots.release()
    if result.iterations_run == 0 and result.deadline_hit:
        raise DeadlineExceeded("the deadline passed before one planner iteration finished; there is no plan to give")
    world_model = ("world_model_step", "world_model_prefill", "world_model_kv_step")
    timings = {"controller": bridge.timings.get("controller", 0.0),
               "world_model": sum(bridge.timings.get(c, 0.0) for c in world_model)}
    return result, timings


Call = Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]]


class _BridgedComponent:
    """A component whose `run` goes through the engine's batchers (from the planner's thread)."""

    def __init__(self, name: str, call: Call) -> None:
        self.name, self.call = name, call

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.call(self.name, inputs)


def planner_step_of(
    engine: Engine, call: Call, cfg: PlannerConfig, history: tuple[np.ndarray, np.ndarray] | None = None
) -> Any:
    """The planner's step on the engine: `cfg.context == "full"` keeps each candidate's context through
    the key/value components (`exporters.runtime.KvPlannerStep`, the offline planner's own), when the
    model has them, after the observed `history` (states `[K, N, D]`, latents `[K, Z]`) when given;
    otherwise (or for "one-frame") the one-frame `action_step`."""
    kv = ("world_model_prefill", "world_model_kv_step")
    if cfg.context == "full" and all(c in engine.batchers for c in kv):
        assert engine.model is not None
        shim = dataclasses.replace(
            engine.model, components={c: _BridgedComponent(c, call) for c in ("controller", *kv)}
        )
        if history is not None and len(history[0]):
            return HistoryKvPlannerStep(shim, *history)
        return KvPlannerStep(shim)
    return action_step(call)


def finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None
