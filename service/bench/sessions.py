"""`lawm bench sessions`: what a plan session saves a control loop, measured through the API.

Three phases, one run, one server:

1. **Warm vs cold, side by side.** One session drives a navigation episode in closed loop (the
   simulator executes each returned action). At every step the same newest frame and goal also go
   to a stateless `POST /v1/plan` (a cold plan: the frame encoded afresh, the search from the
   prior at the preset's full settings). The two calls alternate, so a noisy neighbour hits both
   alike; the ratio is warm p50 / cold p50 (bar: ≤ 0.25).
2. **Planning ahead.** One `plan_ahead` session at the control rate: how fast a step answers when
   its plan was searched during the previous control period, and how many steps could use it.
3. **Concurrent sessions at a control rate.** `sessions` robots, each in its own thread with its
   own connection, step their own episode every control period. Reported: warm-step latency
   p50/p99 as the robot sees it (bar: p99 ≤ 2× p50 at 1 Hz with 4 sessions on 2 cores), deadline
   misses (answers later than the period) and the achieved control rate.

Latencies are client-side wall times (what a robot waits), first (cold) steps left out of the warm
figures. It speaks HTTP through `service.client.Client` only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.bench.robot import RobotBench, episode_world
from service.client import Client

WARM_OVER_COLD_BAR = 0.25
P99_OVER_P50_BAR = 2.0


@dataclass(frozen=True)
class SessionBench:
    sessions: int = 4  # concurrent robots in phase 2
    steps: int = 16  # steps per session (the first, cold, is not a warm figure)
    pairs: int = 8  # warm step / cold plan pairs in phase 1
    control_hz: float = 1.0
    image_size: int = 128
    seed: int = 0
    preset: str = "recon"
    overrides: tuple[tuple[str, Any], ...] = ()
    ahead_tolerance: float = 0.25  # phase 2: a plan_ahead session's tolerance
    warm_samples: int | None = None  # warm steps' samples (None: the server's default, a quarter)
    cold_deadline_s: float = 60.0  # the first (cold) step is the robot's set-up, not a control step

    def __post_init__(self) -> None:
        if self.sessions < 1 or self.steps < 2 or self.pairs < 1:
            raise ValueError("sessions and pairs must be at least 1, steps at least 2 (the first is cold)")
        if not self.control_hz > 0:
            raise ValueError(f"control_hz must be > 0, got {self.control_hz}")

    @property
    def period_s(self) -> float:
        return 1.0 / self.control_hz

    def world(self, episode: int) -> tuple[Any, np.ndarray]:
        """(the navigation env at its start, the goal image) of one episode."""
        env, goal_image, _ = episode_world(
            RobotBench(seed=self.seed, image_size=self.image_size, goal_steps=8), episode
        )
        return env, goal_image

    def open(self, client: Client, goal_image: np.ndarray, steps: int, **extra: Any) -> str:
        return client.create_session(
            goal=goal_image, preset=self.preset, overrides=dict(self.overrides) or None,
            control_period_ms=self.period_s * 1000.0, cold_deadline_ms=self.cold_deadline_s * 1000.0,
            warm_samples=self.warm_samples, ttl_s=max(60.0, 4 * self.period_s * steps), **extra,
        ).session_id


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}


def warm_vs_cold(bench: SessionBench, client: Client, clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Phase 1: `pairs` warm session steps and cold plans on the same frame and goal, alternating."""
    env, goal_image = bench.world(0)
    sid = bench.open(client, goal_image, bench.pairs + 1)
    warm, cold = [], []
    try:
        env.step(client.step(sid, env.render(), step=0).actions_now[0])  # the session's cold first step
        for t in range(1, bench.pairs + 1):
            frame = env.render()
            first_warm = t % 2 == 1  # alternate which call goes first
            for kind in ("warm", "cold") if first_warm else ("cold", "warm"):
                t0 = clock()
                if kind == "warm":
                    action = client.step(sid, frame, step=t).actions_now[0]
                    warm.append(clock() - t0)
                else:
                    client.plan(frame, goal=goal_image, preset=bench.preset, overrides=dict(bench.overrides) or None)
                    cold.append(clock() - t0)
            env.step(action)
    finally:
        client.end_session(sid)
    w, c = _percentiles(warm), _percentiles(cold)
    return {"warm_step": w, "cold_plan": c, "warm_over_cold_p50": w["p50_ms"] / c["p50_ms"]}


def planning_ahead(
    bench: SessionBench, client: Client,
    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Phase 3: one `plan_ahead` session at the control rate (the search for step t+1 runs while the
    robot executes step t); warm-step latency, and how many steps were answered by the plan made ahead."""
    env, goal_image = bench.world(0)
    sid = bench.open(client, goal_image, bench.pairs + 1, plan_ahead=True, ahead_tolerance=bench.ahead_tolerance)
    warm, errors, answered = [], [], 0
    try:
        for t in range(bench.pairs + 1):
            tick = clock()
            step = client.step(sid, env.render(), step=t)
            if t:
                warm.append(clock() - tick)
                answered += step.ahead
                if step.ahead_error is not None:
                    errors.append(step.ahead_error)
            env.step(step.actions_now[0])
            sleep(max(0.0, bench.period_s - (clock() - tick)))
    finally:
        client.end_session(sid)
    return {"warm_step": _percentiles(warm), "answered_ahead": answered,
            "median_ahead_error": float(np.median(errors)) if errors else None}


def concurrent_sessions(
    bench: SessionBench, connect: Callable[[], AbstractContextManager[Client]],
    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Phase 2: `sessions` robots stepping their own episode every control period, in parallel;
    `connect()` gives each robot its own client (a context manager: closed when the robot ends)."""
    period = bench.period_s
    warm: list[float] = []
    cold: list[float] = []
    misses, rates, errors = [0], [], []
    lock = threading.Lock()

    def robot(index: int) -> None:
        env, goal_image = bench.world(1 + index)
        with connect() as client:
            sid = bench.open(client, goal_image, bench.steps)
            try:
                started = clock()
                for t in range(bench.steps):
                    tick = clock()
                    action = client.step(sid, env.render(), step=t).actions_now[0]
                    took = clock() - tick
                    with lock:
                        (warm if t else cold).append(took)
                        misses[0] += took > period
                    env.step(action)
                    sleep(max(0.0, period - (clock() - tick)))
                with lock:
                    rates.append(bench.steps / (clock() - started))
            except Exception as err:  # reported, not swallowed: a failed robot voids the figures
                with lock:
                    errors.append(f"robot {index}: {err}")
            finally:
                client.end_session(sid)

    threads = [threading.Thread(target=robot, args=(i,), name=f"robot-{i}") for i in range(bench.sessions)]
    for thread in threads:
        thread.start()
        sleep(period / bench.sessions)  # robots' ticks spread over the period, as independent loops are
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError("; ".join(errors))
    w = _percentiles(warm)
    return {
        "sessions": bench.sessions, "warm_step": w, "cold_first_step": _percentiles(cold),
        "p99_over_p50": w["p99_ms"] / w["p50_ms"], "deadline_misses": misses[0],
        "steps": bench.sessions * bench.steps, "control_hz": float(np.median(rates)),
    }


def run(
    bench: SessionBench, client: Client, connect: Callable[[], AbstractContextManager[Client]],
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Both phases; the result `lawm bench sessions` prints and writes as JSON."""
    pairs = warm_vs_cold(bench, client)
    ahead = planning_ahead(bench, client, sleep=sleep)
    crowd = concurrent_sessions(bench, connect, sleep=sleep)
    ratio, spread = pairs["warm_over_cold_p50"], crowd["p99_over_p50"]
    rows = [
        {"measurement": "cold POST /v1/plan (same frame and goal)", "p50_ms": pairs["cold_plan"]["p50_ms"],
         "p99_ms": pairs["cold_plan"]["p99_ms"], "n": pairs["cold_plan"]["n"], "ratio": 1.0},
        {"measurement": "warm session step, alone", "p50_ms": pairs["warm_step"]["p50_ms"],
         "p99_ms": pairs["warm_step"]["p99_ms"], "n": pairs["warm_step"]["n"], "ratio": ratio},
        {"measurement": f"warm session step planning ahead at {bench.control_hz:g} Hz ({ahead['answered_ahead']} of "
                        f"{ahead['warm_step']['n']} answered ahead, tolerance {bench.ahead_tolerance:g}, median "
                        f"error {ahead['median_ahead_error'] or float('nan'):.3f})",
         "p50_ms": ahead["warm_step"]["p50_ms"], "p99_ms": ahead["warm_step"]["p99_ms"], "n": ahead["warm_step"]["n"],
         "ratio": ahead["warm_step"]["p50_ms"] / pairs["cold_plan"]["p50_ms"]},
        {"measurement": f"warm session step, {bench.sessions} sessions at {bench.control_hz:g} Hz",
         "p50_ms": crowd["warm_step"]["p50_ms"], "p99_ms": crowd["warm_step"]["p99_ms"], "n": crowd["warm_step"]["n"],
         "ratio": crowd["warm_step"]["p50_ms"] / pairs["cold_plan"]["p50_ms"]},
        {"measurement": f"cold first step, {bench.sessions} sessions", "p50_ms": crowd["cold_first_step"]["p50_ms"],
         "p99_ms": crowd["cold_first_step"]["p99_ms"], "n": crowd["cold_first_step"]["n"],
         "ratio": crowd["cold_first_step"]["p50_ms"] / pairs["cold_plan"]["p50_ms"]},
    ]
    verdict = (
        f"warm step p50 = {ratio:.2f}x a cold plan's (bar <= {WARM_OVER_COLD_BAR:g}): "
        f"{'pass' if ratio <= WARM_OVER_COLD_BAR else 'FAIL'}; with {bench.sessions} sessions at "
        f"{bench.control_hz:g} Hz, p99 = {spread:.2f}x p50 (bar <= {P99_OVER_P50_BAR:g}): "
        f"{'pass' if spread <= P99_OVER_P50_BAR else 'FAIL'}; {crowd['deadline_misses']} of {crowd['steps']} "
        f"steps missed the {bench.period_s * 1000:.0f} ms period; achieved {crowd['control_hz']:.2f} Hz per robot"
    )
    return {
        "title": f"Plan sessions through the API ({bench.preset} preset, navigation world): warm steps vs cold "
                 f"plans, and {bench.sessions} concurrent sessions at {bench.control_hz:g} Hz",
        "statistic": "client-side wall time per call; phase 1 alternates warm step and cold plan on the same "
                     "frame and goal; ratio = p50 / the cold plan's p50",
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in bench.__dict__.items()},
        "rows": rows, "phases": {"warm_vs_cold": pairs, "ahead": ahead, "concurrent": crowd}, "verdict": verdict,
    }
