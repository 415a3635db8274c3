"""POST /v1/plan's search: `training.planning.plan` run in a worker thread, its world model on the engine.

The planner is synchronous torch code. It runs in a thread of its own, and its `step(states,
actions)` hands each controller and world-model call back to the event loop with
`asyncio.run_coroutine_threadsafe(engine.run(...), loop).result()`, so the calls of concurrent
plans (and of other requests) meet in the same batches, at `Priority.PLAN`. A plan whose client
went away is stopped at its next step: its pending engine calls are cancelled and the thread ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from service.inference.batching import Priority
from service.inference.engine import Engine
from service.errors import ApiError
from training.planning import PRESETS, Plan, PlannerConfig, get_cost, plan, preset

PLANNER_FIELDS = {f.name for f in dataclasses.fields(PlannerConfig)}


class PlanCancelled(Exception):
    """The request that started the plan is gone; raised inside the planner thread."""


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
    """The request's planner settings, validated; a bad value is a 422 naming its field."""
    if preset_name is None:
        matching = [name for name, cfg in PRESETS.items() if cfg.action_dim == action_dim]
        if not matching and bounds is None:
            raise ApiError(
                422,
                "invalid_planner_settings",
                f"the controller takes {action_dim}-d actions and no preset has that size "
                f"({ {n: c.action_dim for n, c in PRESETS.items()} })",
                f"give action_low and action_high ({action_dim} numbers each), and a preset to start from",
            )
        preset_name = matching[0] if matching else "droid"
    if bounds is not None and any(len(b) != action_dim for b in bounds):
        raise ApiError(
            422,
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
        raise ApiError(
            422,
            "invalid_planner_settings",
            f"{'overrides.' if field_name in overrides else ''}{field_name}: {err}",
            "fix that setting (GET /v1/models lists the presets and their values)",
        ) from err
    if cfg.action_dim != action_dim:
        raise ApiError(
            422,
            "wrong_action_dim",
            f"action_low/action_high: the plan would search {cfg.action_dim}-d actions but the model's controller "
            f"takes {action_dim}-d actions",
            f"give action_low and action_high with {action_dim} numbers each, or the preset made for this robot",
        )
    rows = cfg.samples * cfg.horizon * cfg.iterations
    if rows > max_rows:
        raise ApiError(
            422,
            "plan_too_large",
            f"samples x horizon x iterations = {cfg.samples} x {cfg.horizon} x {cfg.iterations} = {rows} world-model "
            f"evaluations; this server allows at most {max_rows} per plan",
            "lower samples, horizon or iterations (LAWM_MAX_PLAN_ROWS sets the limit)",
        )
    return cfg


@dataclass
class _Bridge:
    """The planner thread's way into the engine (and the per-component timings it collects)."""

    engine: Engine
    loop: asyncio.AbstractEventLoop
    deadline: float | None  # hard deadline for every engine call (absolute monotonic)
    timings: dict[str, float] = field(default_factory=lambda: {"controller": 0.0, "world_model": 0.0})
    _pending: set[concurrent.futures.Future[Any]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cancelled: bool = False

    def call(self, component: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            if self._cancelled:
                raise PlanCancelled()
            future = asyncio.run_coroutine_threadsafe(
                self.engine.run(component, inputs, Priority.PLAN, self.deadline), self.loop
            )
            self._pending.add(future)
        try:
            return future.result()
        except concurrent.futures.CancelledError as err:
            raise PlanCancelled() from err
        finally:
            with self._lock:
                self._pending.discard(future)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            for future in self._pending:
                future.cancel()

    def step(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """states `[B, N, D]`, actions `[B, A]` -> next states `[B, N, D]`: controller, then one WM step."""
        s = states.detach().to(torch.float32).contiguous().numpy()
        a = actions.detach().to(torch.float32).contiguous().numpy()
        t0 = time.perf_counter()
        latents = self.call("controller", {"actions": a, "states": s})["latents"]  # [B, Z]
        t1 = time.perf_counter()
        nxt = self.call("world_model_step", {"states": s, "latents": latents})["next_states"]  # [B, N, D]
        self.timings["controller"] += t1 - t0
        self.timings["world_model"] += time.perf_counter() - t1
        return torch.from_numpy(nxt)

    def decode(self, states: torch.Tensor) -> torch.Tensor:
        """For the pixel cost: states `[B, N, D]` -> the first decoded frame of each `[B, 3, H, W]`."""
        s = states.detach().to(torch.float32).contiguous().numpy()[:, None]  # [B, 1, N, D]
        return torch.from_numpy(self.call("decoder", {"states": s})["frames"][:, 0])


class PlanSlots:
    """At most `limit` plans at once (each holds a thread); more are answered 429 at once rather
    than queued where no one can see them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=limit, thread_name_prefix="planner")

    def acquire(self) -> None:
        if self.active >= self.limit:
            raise ApiError(
                429,
                "overloaded",
                f"{self.active} plans are running, the most this server runs at once",
                "retry after the Retry-After seconds (LAWM_MAX_CONCURRENT_PLANS sets the limit)",
                headers={"Retry-After": "1"},
            )
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
) -> tuple[Plan, dict[str, float]]:
    """Search from `state` `[N, D]` towards `goal` `[N, D]`; returns the plan and per-component seconds.

    `soft_deadline` stops iterating (the best plan so far is returned); `hard_deadline` bounds each
    engine call (504 past it). Both are absolute `time.monotonic()` values."""
    loop = asyncio.get_running_loop()
    bridge = _Bridge(engine, loop, hard_deadline)
    if cfg.cost == "pixel":
        engine.require("decoder")
    cost = get_cost(cfg.cost, decode=bridge.decode if cfg.cost == "pixel" else None)
    search = functools.partial(
        plan, bridge.step, cost, torch.from_numpy(state), torch.from_numpy(goal), cfg, deadline_at=soft_deadline
    )
    slots.acquire()
    try:
        result = await loop.run_in_executor(slots.executor, search)
    except asyncio.CancelledError:
        bridge.cancel()  # the thread stops at its next engine call
        raise
    except ValueError as err:  # the planner's own input checks (shapes, NaN)
        raise ApiError(422, "invalid_plan_inputs", str(err)) from err
    finally:
        slots.release()
    return result, bridge.timings


def finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None
