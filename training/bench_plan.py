"""`lawm bench plan`: time per plan with a trained LAM + controller, split into encoder, controller
and world-model time, and how close the planner's world-model calls run to the world model's
own offline throughput at the same batch size (measured side by side in one run)."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from training.cli_kit import machine
from training.envs.episodes import record_episode
from training.evaluation.common import require_controller
from training.evaluation.planning import encode_observation
from training.models.lam import LatentActionModel
from training.planning import PRESET_FOR_ENV, get_cost, plan, preset
from training.world_model_steps import KeptContextStep, world_model_step


class _Timed:
    """Wraps a callable and adds its wall time to a shared counter."""

    def __init__(self, fn: Any, totals: dict[str, float], key: str) -> None:
        self.fn, self.totals, self.key = fn, totals, key

    def __call__(self, *args: Any) -> Any:
        t0 = time.perf_counter()
        out = self.fn(*args)
        self.totals[self.key] += time.perf_counter() - t0
        return out


@torch.no_grad()
def offline_world_model_calls_per_s(model: LatentActionModel, batch: int, repeats: int) -> float:
    """World-model single steps per second at `batch` rows, with nothing else around them."""
    n, d, z = model.encoder.tokens, model.encoder.dim, model.latent_dim
    states, latents = torch.randn(batch, 1, n, d), torch.randn(batch, 1, z)
    model.world_model.next_state(states, latents)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.world_model.next_state(states, latents)
        times.append(time.perf_counter() - t0)
    return 1.0 / statistics.median(times)


@torch.no_grad()
def bench_plan(
    model: LatentActionModel, env: str, plans: int = 3, seed: int = 0, context: str | None = None
) -> dict[str, Any]:
    """`context` picks the world-model step ("full" keeps each candidate's context through the KV
    cache, "one-frame" sees the current state alone; default: the preset's)."""
    controller = require_controller(model)
    cfg = preset(PRESET_FOR_ENV[env], seed=seed, **({"context": context} if context else {}))
    totals = {"encoder": 0.0, "controller": 0.0, "world_model": 0.0}
    timed_controller = _Timed(controller, totals, "controller")

    def to_latent(actions: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return timed_controller(actions[:, None], states[:, None])[:, 0]  # [B, Z]

    inner = world_model_step(model.world_model, to_latent, cfg.context)
    step: Any
    if isinstance(inner, KeptContextStep):
        class TimedContextStep:  # world-model time = the step's time less the controller's inside it
            def begin(self, state: torch.Tensor, batch: int) -> Any:
                return inner.begin(state, batch)

            def advance(self, carry: Any, actions: torch.Tensor) -> Any:
                t0, before = time.perf_counter(), totals["controller"]
                out = inner.advance(carry, actions)
                totals["world_model"] += time.perf_counter() - t0 - (totals["controller"] - before)
                return out

        step = TimedContextStep()
    else:
        def step(states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
            t0, before = time.perf_counter(), totals["controller"]
            out = inner(states, actions)
            totals["world_model"] += time.perf_counter() - t0 - (totals["controller"] - before)
            return out

    per_plan, wm_calls = [], 0
    for i in range(plans + 1):  # the first plan warms up and is dropped
        episode = record_episode(env, seed + i, steps=cfg.horizon, image_size=model.cfg.encoder.image_size)
        before = dict(totals)
        t0 = time.perf_counter()
        start = _Timed(encode_observation, totals, "encoder")(model, episode.action_frames[0])
        goal = _Timed(encode_observation, totals, "encoder")(model, episode.action_frames[cfg.horizon])
        result = plan(step, get_cost(cfg.cost), start, goal, cfg)
        elapsed = time.perf_counter() - t0
        if i == 0:
            totals.update(dict.fromkeys(totals, 0.0))
            continue
        per_plan.append({"total_s": elapsed, **{f"{k}_s": totals[k] - before[k] for k in totals}})
        wm_calls += cfg.horizon * result.iterations_run
    wm_time = sum(p["world_model_s"] for p in per_plan)
    served = wm_calls / wm_time
    offline = offline_world_model_calls_per_s(model, cfg.samples, repeats=max(5, plans * 3))
    median = {k: statistics.median(p[k] for p in per_plan) for k in per_plan[0]}
    row = {
        "preset": PRESET_FOR_ENV[env], "context": cfg.context, "samples": cfg.samples, "horizon": cfg.horizon,
        "iterations": cfg.iterations,
        **median, "wm_calls_per_s": served, "offline_wm_calls_per_s": offline, "share_of_offline": served / offline,
    }
    return {
        "title": f"Planning latency ({PRESET_FOR_ENV[env]} preset, {env} world)",
        "machine": machine(),
        "statistic": f"median over {plans} plans after one warm-up; offline: median of single one-frame world-model "
        f"steps at batch {cfg.samples}",
        "rows": [row],
    }
