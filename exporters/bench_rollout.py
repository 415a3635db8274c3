"""`lawm bench rollout`: the world model's key/value cache against re-running the context.

Two tables, every figure measured side by side in one run (the variants alternate within each
repeat, so a noisy neighbour hits them alike) and reported as medians and ratios:

- Rollout: `context` observed states of real clips + `steps` predicted ones (what POST /v1/rollouts
  computes), re-running the whole window at every step (today's `world_model` calls) vs one prefill
  and cached steps, on torch in-process and on onnxruntime through the exported components. Each
  row also gives the parity: max |cached - re-run| per step on the same inputs, and both rollouts'
  error to the exact (float64) rollout.
- Planning: one RECON-preset plan per episode of the navigation world with the model's controller,
  predicting from the current state alone ("one-frame") vs keeping every candidate's context
  ("full", through the cache), on both runtimes.
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from exporters.bench import bench_repository, machine, repository_source
from exporters.runtime import LoadedModel, load_model, planner_step
from training.cli_kit import load_average

ROLLOUT_BAR = 4.0  # cached vs re-run, 8 context + 8 steps
PLAN_BAR = 1.3  # full-context plan vs one-frame plan


def _median_times(runners: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    for run in runners.values():  # warm-up: first-call allocations, onnxruntime's arena
        run()
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(repeats):
        for key, run in runners.items():
            t0 = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _ort_rerun(model: LoadedModel, context: np.ndarray, context_latents: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Today's rollout through the `world_model` component: the whole window again at every step."""
    max_steps = model.config.world_model.max_steps
    states, latents, outputs = context, context_latents, []
    for h in range(actions.shape[1]):
        latents = np.concatenate([latents, actions[:, h : h + 1]], axis=1)[:, -max_steps:]  # [B, T, Z]
        states = states[:, -max_steps:]
        nxt = model.components["world_model"].run({"states": states, "latents": latents})["predictions"][:, -1]
        outputs.append(nxt)
        states = np.concatenate([states, nxt[:, None]], axis=1)
    return np.stack(outputs, axis=1)  # [B, H, N, D]


def _ort_cached(model: LoadedModel, context: np.ndarray, context_latents: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """The same rollout through `world_model_prefill` once and `world_model_kv_step` after (the
    window fits: context + steps <= max_steps + 1)."""
    latents = np.concatenate([context_latents, actions[:, :1]], axis=1)
    out = model.components["world_model_prefill"].run({"states": context, "latents": latents})
    outputs = [out["next_states"]]
    for h in range(1, actions.shape[1]):
        out = model.components["world_model_kv_step"].run({
            "states": outputs[-1], "latents": actions[:, h],
            "past_keys": out["present_keys"], "past_values": out["present_values"],
        })
        outputs.append(out["next_states"])
    return np.stack(outputs, axis=1)


def _step_parity_torch(wm: Any, history: torch.Tensor, latents: torch.Tensor, context: int) -> float:
    """max |cached step - uncached step| / scale over the rollout's steps, both fed `history`."""
    worst = 0.0
    with torch.inference_mode():
        nxt, cache = wm.prefill(history[:, :context], latents[:, :context])
        expected = wm.next_state(history[:, :context], latents[:, :context])
        worst = float((nxt - expected).abs().max()) / max(1.0, float(expected.abs().max()))
        for t in range(context, history.shape[1]):
            expected = wm.next_state(history[:, : t + 1], latents[:, : t + 1])
            nxt, cache = wm.step(cache, history[:, t], latents[:, t])
            worst = max(worst, float((nxt - expected).abs().max()) / max(1.0, float(expected.abs().max())))
    return worst


def _step_parity_ort(model: LoadedModel, history: np.ndarray, latents: np.ndarray, context: int) -> float:
    worst = 0.0
    rerun = model.components["world_model"]
    out = model.components["world_model_prefill"].run({"states": history[:, :context], "latents": latents[:, :context]})
    for t in range(context - 1, history.shape[1]):
        if t >= context:
            out = model.components["world_model_kv_step"].run({
                "states": history[:, t], "latents": latents[:, t],
                "past_keys": out["present_keys"], "past_values": out["present_values"],
            })
        expected = rerun.run({"states": history[:, : t + 1], "latents": latents[:, : t + 1]})["predictions"][:, -1]
        worst = max(worst, float(np.abs(out["next_states"] - expected).max()) / max(1.0, float(np.abs(expected).max())))
    return worst


def _gflop(fn: Callable[[], Any]) -> float:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.inference_mode():
        fn()  # the math backend spells attention as matmuls, which the counter sees
    return counter.get_total_flops() / 1e9


def rollout_rows(
    model: Any, ort: LoadedModel, context: int, steps: int, batches: tuple[int, ...], repeats: int,
    say: Callable[[str], None],
) -> tuple[list[dict[str, Any]], str]:
    from exporters.components import build_graph
    from exporters.real_inputs import real_clips

    wm = model.world_model
    if context + steps > wm.cfg.max_steps + 1:
        raise ValueError(f"context + steps must be <= max_steps + 1 = {wm.cfg.max_steps + 1} (no window slide here)")
    video, source = real_clips(2, model.cfg.encoder.tubelet * (context + steps), model.cfg.encoder.image_size)
    with torch.inference_mode():
        states = model.encode(torch.from_numpy(video))  # [2, C+H, N, D]
        latents = build_graph(model, "idm")(states)  # [2, C+H-1, Z]
    exact_wm = copy.deepcopy(wm).double()
    rows = []
    for batch in batches:
        say(f"rollout of {context} + {steps} states at batch {batch}")
        pick = torch.arange(batch) % states.shape[0]
        rows += _rollout_batch(wm, exact_wm, ort, states[pick, :context], latents[pick], context, steps, repeats)
    return rows, source


def _rollout_batch(
    wm: Any, exact_wm: Any, ort: LoadedModel, ctx: torch.Tensor, z: torch.Tensor, context: int, steps: int, repeats: int
) -> list[dict[str, Any]]:
    """ctx `[B, C, N, D]` observed states, z `[B, C+H-1, Z]` their latents then the H applied ones."""
    from training.models.world_model import autoregressive_rollout

    args = (ctx, z[:, : context - 1], z[:, context - 1 : context - 1 + steps])
    np_args = tuple(np.ascontiguousarray(a.numpy()) for a in args)
    with torch.inference_mode():
        exact = autoregressive_rollout(exact_wm, *(a.double() for a in args), cached=False)  # [B, H, N, D] float64
    outputs: dict[str, Any] = {}

    def keep(key: str, fn: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                outputs[key] = fn()

        return run

    runners = {
        "torch_rerun": keep("torch_rerun", lambda: autoregressive_rollout(wm, *args, cached=False)),
        "torch_cached": keep("torch_cached", lambda: autoregressive_rollout(wm, *args)),
        "ort_rerun": keep("ort_rerun", lambda: _ort_rerun(ort, *np_args)),
        "ort_cached": keep("ort_cached", lambda: _ort_cached(ort, *np_args)),
    }
    medians = _median_times(runners, repeats)
    history = torch.cat([ctx, exact.float()], dim=1)[:, : context + steps - 1]  # the exact trajectory as inputs
    applied = z[:, : context + steps - 1]
    scale = max(1.0, float(exact.abs().max()))
    err = {k: float((torch.as_tensor(np.asarray(v)).double() - exact).abs().max()) / scale for k, v in outputs.items()}
    gflop_rerun = _gflop(lambda: autoregressive_rollout(wm, *args, cached=False))
    gflop_cached = _gflop(lambda: autoregressive_rollout(wm, *args))
    rows = []
    for runtime, prefix in (("torch", "torch"), ("onnxruntime", "ort")):
        a, b = outputs[f"{prefix}_rerun"], outputs[f"{prefix}_cached"]
        diff = float(np.abs(np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)).max()) / scale
        step_parity = (
            _step_parity_torch(wm, history, applied, context) if runtime == "torch"
            else _step_parity_ort(ort, history.numpy(), applied.numpy(), context)
        )
        rows.append({
            "runtime": runtime, "batch": ctx.shape[0], "context": context, "steps": steps,
            "rerun_s": medians[f"{prefix}_rerun"], "cached_s": medians[f"{prefix}_cached"],
            "speedup": medians[f"{prefix}_rerun"] / medians[f"{prefix}_cached"],
            "gflop_rerun": gflop_rerun, "gflop_cached": gflop_cached,
            "step_parity": step_parity, "rollout_diff": diff,
            "rerun_vs_exact": err[f"{prefix}_rerun"], "cached_vs_exact": err[f"{prefix}_cached"],
        })
    return rows


def planning_rows(
    model: Any, ort: LoadedModel, env: str, plans: int, say: Callable[[str], None]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from training.envs.episodes import record_episode
    from training.evaluation.common import require_controller
    from training.evaluation.planning import encode_observation, latent_step
    from training.planning import PRESET_FOR_ENV, get_cost, plan, preset

    controller = require_controller(model)
    cfg = preset(PRESET_FOR_ENV[env])
    steps: dict[tuple[str, str], Any] = {}
    for context in ("one-frame", "full"):
        steps[("torch", context)] = latent_step(model, controller, context)
        steps[("onnxruntime", context)] = planner_step(ort, context)
    times: dict[tuple[str, str], list[float]] = {k: [] for k in steps}
    first: dict[tuple[str, str], list[np.ndarray]] = {k: [] for k in steps}
    cost = get_cost(cfg.cost)
    keys = list(steps)
    for i in range(plans + 1):  # the first episode warms up and is dropped
        episode = record_episode(env, 1000 + i, steps=cfg.horizon, image_size=model.cfg.encoder.image_size)
        start = encode_observation(model, episode.action_frames[0])
        goal = encode_observation(model, episode.action_frames[cfg.horizon])
        # Interleaved, each context's plan next to the other's, the order reversed every episode:
        # load that drifts over minutes then falls on both alike.
        for key in keys if i % 2 else keys[::-1]:
            say(f"plan {i}/{plans}: {key[0]}, {key[1]} context")
            t0 = time.perf_counter()
            result = plan(steps[key], cost, start, goal, cfg)
            if i:
                times[key].append(time.perf_counter() - t0)
                first[key].append(result.first_action.numpy())
    rows = []
    for runtime in ("torch", "onnxruntime"):
        one_frame, full = times[(runtime, "one-frame")], times[(runtime, "full")]
        agree = float(np.mean([
            np.abs(a - b).max() <= 1e-6 for a, b in zip(first[(runtime, "one-frame")], first[(runtime, "full")], strict=True)
        ]))
        rows.append({
            "runtime": runtime, "preset": PRESET_FOR_ENV[env], "samples": cfg.samples, "horizon": cfg.horizon,
            "iterations": cfg.iterations, "one_frame_s": statistics.median(one_frame),
            "full_context_s": statistics.median(full),
            # the median of the per-episode ratios: each pair ran back to back
            "full_vs_one_frame": statistics.median(f / o for f, o in zip(full, one_frame, strict=True)),
            "same_first_action": agree,
        })
    return rows, {"preset": PRESET_FOR_ENV[env], "plans": plans}


def bench_rollout(
    repo: Path | None = None,
    checkpoint: Path = Path("models/demo"),
    name: str = "demo",
    version: int | None = None,
    context: int = 8,
    steps: int = 8,
    batches: tuple[int, ...] = (1, 8),
    repeats: int = 5,
    plans: int = 3,
    env: str = "navigation",
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    from exporters.repository import CHECKPOINT_DIR, resolve_version
    from exporters.torch_runtime import build_model

    say = progress or (lambda msg: None)
    if threads is not None:
        torch.set_num_threads(threads)
        os.environ["LAWM_ORT_THREADS"] = str(threads)
    load_before = os.getloadavg()
    command = (
        f"lawm bench rollout --context {context} --steps {steps} --batches {','.join(map(str, batches))} "
        f"--repeats {repeats} --plans {plans} --env {env}" + (f" --threads {threads}" if threads else "")
    )
    with bench_repository(checkpoint, repo, name, command, say) as (repo, command):
        ort = load_model(repo, name, version, runtime="onnxruntime")
        model, _ = build_model(resolve_version(repo, name, ort.version) / CHECKPOINT_DIR)
        source = repository_source(ort)
        rows, clips = rollout_rows(model, ort, context, steps, batches, repeats, say)
        plan_rows, plan_info = planning_rows(model, ort, env, plans, say) if plans else ([], {})
    load_after = os.getloadavg()
    return _report(rows, plan_rows, plan_info, source, clips, repeats, plans, command, load_before, load_after)


def _report(
    rows: list[dict[str, Any]], plan_rows: list[dict[str, Any]], plan_info: dict[str, Any], source: str, clips: str,
    repeats: int, plans: int, command: str, load_before: tuple[float, ...], load_after: tuple[float, ...],
) -> dict[str, Any]:
    import onnxruntime

    at1 = {r["runtime"]: r for r in rows if r["batch"] == min(r2["batch"] for r2 in rows)}
    parts = [
        f"rollout {r['context']} + {r['steps']} at batch {r['batch']}, cached vs re-run on {rt}: "
        f"{r['speedup']:.2f}x (bar {ROLLOUT_BAR:g}x: {'met' if r['speedup'] >= ROLLOUT_BAR else 'missed'})"
        for rt, r in at1.items()
    ]
    worst_step = max((r["step_parity"] for r in rows), default=float("nan"))
    parts.append(f"per-step parity cached vs re-run: max {worst_step:.1e} of the scale (bound 1e-5)")
    parts += [
        f"{r['preset']} plan, full context vs one-frame on {r['runtime']}: {r['full_vs_one_frame']:.2f}x "
        f"(bar <= {PLAN_BAR:g}x: {'met' if r['full_vs_one_frame'] <= PLAN_BAR else 'missed'})"
        for r in plan_rows
    ]
    report: dict[str, Any] = {
        "title": "World-model key/value cache: rollouts and plans, cached vs re-run",
        "machine": machine(),
        "command": command,
        "checkpoint": source,
        "statistic": (
            f"rollouts: median of {repeats} runs after one warm-up, the four variants alternating within each repeat, "
            f"on real clips ({clips}); speedup = rerun_s / cached_s; gflop from torch's flop counter (attention as "
            "matmuls); step_parity = max over steps of |cached - re-run| / max(1, |re-run|) with both fed the same "
            "(exact) trajectory; rollout_diff and *_vs_exact compare whole closed-loop rollouts (float32 rounding "
            "compounds over the steps; see tests/integration/test_world_model_cache.py). "
            f"Plans: median over {plans} episodes after one warm-up episode, the four planners back to back per episode "
            "(order reversed every episode); full_vs_one_frame = median of the per-episode ratios; same_first_action = "
            "share of episodes whose two plans start with the same action"
        ),
        "verdict": "; ".join(parts),
        "load_average": load_average(load_before, load_after),
        "onnxruntime": onnxruntime.__version__,
        "rows": rows,
    }
    if plan_rows:
        report["tables"] = [{
            "title": f"Planning cost: one-frame vs full context ({plan_info['preset']} preset, median of {plans} plans)",
            "rows": plan_rows,
        }]
    return report
