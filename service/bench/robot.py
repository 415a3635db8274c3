"""`lawm bench robot`: closed-loop navigation through the served API, at a fixed control rate.

Each episode is a `training.envs.NavigationEnv` world with a start pose and a goal pose a random
walk of `goal_steps` actions away (the goal image is the view from there). The model policy opens a
plan session with that goal image and, every control period, sends the newest frame, executes the
returned action in the simulator and waits for the next tick; the random policy draws actions
uniformly from the action box. An episode succeeds when the final position is within
`success_m` of the goal's. Reported per policy: success rate and final distance (means with
standard errors), achieved control rate, step latency p50/p99 and deadline misses (steps whose
answer took longer than the control period) over the warm steps (the first, cold, step is the
robot's set-up, planned under the session's `cold_deadline_ms`).

It speaks HTTP through `service.client.Client` only, so it measures what a robot would see.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.client import Client
from training.envs.navigation import NavigationEnv

POLICIES = ("model", "labelled", "random")  # labelled: the action-labelled WM, in-process (needs `labelled=`)
COLD_DEADLINE_S = 60.0


@dataclass(frozen=True)
class RobotBench:
    episodes: int = 16
    steps: int = 16  # control steps per episode
    goal_steps: int = 8  # random-walk actions from the start to the goal pose
    control_hz: float = 1.0
    success_m: float = 0.5
    image_size: int = 128
    seed: int = 0
    preset: str = "recon"
    overrides: tuple[tuple[str, Any], ...] = ()
    policies: tuple[str, ...] = ("model", "random")

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.steps < 1 or self.goal_steps < 1:
            raise ValueError("episodes, steps and goal_steps must be at least 1")
        if not self.control_hz > 0:
            raise ValueError(f"control_hz must be > 0, got {self.control_hz}")
        unknown = sorted(set(self.policies) - set(POLICIES))
        if unknown:
            raise ValueError(f"unknown policies {unknown}; choose from {POLICIES}")


def episode_world(bench: RobotBench, episode: int) -> tuple[NavigationEnv, np.ndarray, np.ndarray]:
    """(the env at its start pose, the goal image, the goal pose) of one episode."""
    env = NavigationEnv(bench.seed * 10_007 + episode, image_size=bench.image_size)
    rng = np.random.default_rng([bench.seed, episode])
    env.reset()
    low, high = np.array(NavigationEnv.ACTION_LOW), np.array(NavigationEnv.ACTION_HIGH)
    for _ in range(bench.goal_steps):
        env.step(rng.uniform(low, high))
    goal_image, goal_pose = env.render(), env.pose
    env.reset()
    return env, goal_image, goal_pose


def _se(values: list[float]) -> float:
    return float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0


def run_policy(
    bench: RobotBench, policy: str, client: Client | None, *,
    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
    labelled: Any = None,
) -> dict[str, Any]:
    """Every episode under one policy; returns the policy's row of figures. `labelled`: a
    `service.bench.labelled.LabelledPolicy` for the "labelled" policy."""
    if policy == "labelled" and labelled is None:
        raise ValueError("the labelled policy needs a LabelledPolicy (lawm bench robot --labelled CHECKPOINT)")
    period = 1.0 / bench.control_hz
    distances, starts, latencies, misses, rates = [], [], [], 0, []
    for episode in range(bench.episodes):
        env, goal_image, goal_pose = episode_world(bench, episode)
        rng = np.random.default_rng([bench.seed, episode, 1])
        starts.append(float(np.linalg.norm(env.pose[:2] - goal_pose[:2])))
        session = None
        if policy == "model":
            assert client is not None
            session = client.create_session(
                goal=goal_image, preset=bench.preset, overrides=dict(bench.overrides) or None,
                control_period_ms=period * 1000.0, ttl_s=max(60.0, 4 * period * bench.steps),
                cold_deadline_ms=COLD_DEADLINE_S * 1000.0,  # the first plan is the set-up, before the loop's clock
            )
        elif policy == "labelled":
            labelled.start(goal_image)
        started = clock()
        try:
            for t in range(bench.steps):
                tick = clock()
                if session is not None and client is not None:
                    step = client.step(session.session_id, env.render(), step=t)
                    action = step.actions_now[0]
                elif policy == "labelled":
                    action = labelled.act(env.render())
                else:
                    action = rng.uniform(NavigationEnv.ACTION_LOW, NavigationEnv.ACTION_HIGH)
                took = clock() - tick
                if t:  # the first step is the cold plan under its own deadline, not a control step
                    latencies.append(took)
                    misses += took > period
                env.step(action)
                if policy == "model":  # hold the control rate (the random policy needs no server)
                    sleep(max(0.0, period - (clock() - tick)))
        finally:
            if session is not None and client is not None:
                client.end_session(session.session_id)
        elapsed = clock() - started
        rates.append(bench.steps / elapsed if elapsed > 0 else float("inf"))
        distances.append(float(np.linalg.norm(env.pose[:2] - goal_pose[:2])))
    successes = [float(d < bench.success_m) for d in distances]
    served = policy == "model"
    return {
        "policy": policy,
        "episodes": bench.episodes,
        "success_rate": float(np.mean(successes)),
        "success_se": _se(successes),
        "final_distance_m": float(np.mean(distances)),
        "final_distance_se": _se(distances),
        "start_distance_m": float(np.mean(starts)),
        "control_hz": float(np.median(rates)) if served else None,
        "step_p50_ms": float(np.percentile(latencies, 50) * 1000) if served else None,
        "step_p99_ms": float(np.percentile(latencies, 99) * 1000) if served else None,
        "deadline_misses": int(misses) if served else None,
    }


def verdict(rows: list[dict[str, Any]], period_s: float) -> str:
    """The issue's bar (the model's success rate at least twice random's) and what the robot saw."""
    by = {r["policy"].split(" ")[0]: r for r in rows}
    model, random, labelled = by.get("model"), by.get("random"), by.get("labelled")
    if model is None or random is None:
        return "needs both the model and the random policy"
    met = model["success_rate"] >= 2 * random["success_rate"] and model["success_rate"] > 0
    return (
        f"success {model['success_rate']:.0%} +- {model['success_se']:.0%} vs random {random['success_rate']:.0%} "
        f"(bar: at least 2x random's, above zero): {'pass' if met else 'FAIL'}; final distance "
        f"{model['final_distance_m']:.2f} m vs random {random['final_distance_m']:.2f} m (start "
        f"{model['start_distance_m']:.2f} m); warm steps p50 {model['step_p50_ms']:.0f} ms, "
        f"{model['deadline_misses']} missed the {period_s * 1000:.0f} ms period"
        + ("" if labelled is None else f"; the action-labelled WM: success {labelled['success_rate']:.0%}, final "
           f"distance {labelled['final_distance_m']:.2f} m")
    )


def run(bench: RobotBench, client: Client | None, **kwargs: Any) -> dict[str, Any]:
    """Every policy side by side; the result `lawm bench robot` prints and writes as JSON."""
    rows = [run_policy(bench, policy, client if policy == "model" else None, **kwargs) for policy in bench.policies]
    for row in rows:
        if row["policy"] == "labelled":
            row["policy"] = "labelled (action-labelled WM, in-process)"
    return {
        "title": f"Closed-loop navigation through the API: {bench.episodes} episodes x {bench.steps} steps at "
                 f"{bench.control_hz:g} Hz, success = final distance < {bench.success_m:g} m",
        "protocol": f"the navigation simulator as the robot; start and goal poses {bench.goal_steps} random-walk "
                    "actions apart, the goal given as its image; the model policy opens a plan session (cold first "
                    "step under its own deadline) and executes each returned action at the control rate; the random "
                    "policy draws uniform actions from the box",
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in bench.__dict__.items()},
        "verdict": verdict(rows, 1.0 / bench.control_hz) if {"model", "random"} <= set(bench.policies) else None,
        "rows": rows,
    }
