"""`lawm bench serve`: rate sweeps against a server, and the full comparison in one run — batching
on vs off (`--max-batch-size 1`) on two real `lawm serve` processes started one after the other,
served throughput as a share of the offline engine's (same runtime, same batch size, nothing
else running), and planning requests per second at a p99 target.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.bench.loadgen import (
    RequestSpec,
    client_for,
    latent_actions_request,
    plan_request,
    post_goal,
    run_rate,
    sample_clip_frames,
)
from service.bench.processes import ServerProcess, free_port, lawm_serve_command

ENDPOINTS = ("latent-actions", "plan")


@dataclass(frozen=True)
class ServeBench:
    """What to send and how hard; and, for --spawn, what to serve."""

    endpoint: str = "latent-actions"
    rates: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
    duration_s: float = 10.0
    frames: int = 16  # clip length at the model's fps (latent-actions)
    clip: Path | None = None  # default: the sample clip carphone_pristine
    seed: int = 0
    timeout_s: float = 60.0
    warmup_requests: int = 3
    api_key: str | None = None
    # planning at a p99 target (only when the model has a controller)
    plan_rates: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    p99_target_ms: float = 1000.0
    plan_options: dict[str, Any] = field(default_factory=dict)  # extra /v1/plan fields (preset, overrides)
    # --spawn: the model, and the batching server's limits (None: the server's defaults)
    repo: Path = Path("models/repository")
    model: str = "demo"
    version: int | None = 1
    runtime: str = "onnxruntime"
    max_batch_size: int | None = None
    max_queue_delay_ms: float | None = None

    def __post_init__(self) -> None:
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"--endpoint must be one of {ENDPOINTS}, got {self.endpoint!r}")
        if not self.rates or any(r <= 0 for r in self.rates):
            raise ValueError(f"--rates must be positive request rates, got {self.rates}")
        if self.duration_s <= 0:
            raise ValueError(f"--duration must be positive, got {self.duration_s}")


# ----------------------------------------------------------------------------- one server
async def model_info(client: Any, api_key: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    r = await client.get("/v1/models", headers=headers)
    r.raise_for_status()
    return dict(r.json()["models"][0])


async def request_for(client: Any, endpoint: str, info: dict[str, Any], opts: ServeBench) -> RequestSpec | None:
    """The request the load repeats; None for planning on a model without a controller."""
    frames = sample_clip_frames(int(info["image_size"]), float(info["fps"]), max(opts.frames, 2), opts.clip)
    if endpoint == "latent-actions":
        return latent_actions_request(frames, float(info["fps"]), opts.api_key)
    if info.get("action_dim") is None:
        return None
    goal = await post_goal(client, frames[-1], opts.api_key)
    return plan_request(frames[0], goal, opts.api_key, **opts.plan_options)


def _flat(row: dict[str, Any], server: str) -> dict[str, Any]:
    """The table's row: client figures plus the busiest component's batching, queue and compute."""
    comps = row.get("components", {})
    main = max(comps, key=lambda c: comps[c]["busy"]) if comps else None
    return {
        "server": server,
        "rate_rps": row["rate_rps"],
        "sent": row["sent"],
        "ok": row["ok"],
        "throughput_rps": row["throughput_rps"],
        "p50_ms": row["p50_ms"],
        "p95_ms": row["p95_ms"],
        "p99_ms": row["p99_ms"],
        "rejected": row["rejected"],
        "errors": row["errors"],  # failed answers and client timeouts (summarize counts both)
        "mean_batch": comps[main]["mean_batch"] if main else None,
        "queue_ms": sum(c["queue_ms"] for c in comps.values()) if comps else None,
        "compute_ms": sum(c["compute_ms"] for c in comps.values()) if comps else None,
        "busy": comps[main]["busy"] if main else None,  # share of the wall time the busiest component computed
        "loadavg": row.get("loadavg_1m"),
        "cpu_ms_per_ok": 1000.0 * row["server_cpu_s"] / row["ok"] if row.get("server_cpu_s") and row["ok"] else None,
    }


async def sweep(url: str, endpoint: str, rates: tuple[float, ...], opts: ServeBench,
                cpu: Callable[[], float | None] | None = None) -> dict[str, Any]:
    """Warm-up requests (not counted), then each rate in turn; the raw rows and the server's model info.
    `cpu` reads the server's CPU seconds (spawned servers), so each rate also says CPU time per request."""
    async with client_for(url) as client:
        info = await model_info(client, opts.api_key)
        spec = await request_for(client, endpoint, info, opts)
        if spec is None:
            return {"info": info, "rows": [], "skipped": "the model has no controller, so it cannot plan"}
        for _ in range(opts.warmup_requests):
            r = await client.request(spec.method, spec.path, content=spec.content, headers=spec.headers,
                                     timeout=opts.timeout_s)
            if r.status_code != 200:
                raise RuntimeError(f"warm-up {spec.method} {spec.path} answered {r.status_code}: {r.text[:500]}")
        rows = []
        for i, rate in enumerate(rates):
            cpu0 = cpu() if cpu is not None else None
            row = await run_rate(client, spec, rate, opts.duration_s, seed=opts.seed + i,
                                 timeout_s=opts.timeout_s, api_key=opts.api_key)
            cpu1 = cpu() if cpu is not None else None
            if cpu0 is not None and cpu1 is not None:
                row["server_cpu_s"] = cpu1 - cpu0
            row["loadavg_1m"] = os.getloadavg()[0]  # this host's run queue (ours included): shared-machine context
            rows.append(row)
        return {"info": info, "rows": rows}


def saturation(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rate at which the server answered the most requests per second."""
    return max(rows, key=lambda r: r["throughput_rps"])


def at_p99_target(rows: list[dict[str, Any]], target_ms: float) -> dict[str, Any] | None:
    """The highest-throughput rate whose p99 met the target with nothing rejected or failed."""
    good = [r for r in rows if r["p99_ms"] is not None and r["p99_ms"] <= target_ms
            and r["rejected"] == 0 and r["errors"] == 0 and r["timeouts"] == 0]
    return max(good, key=lambda r: r["throughput_rps"]) if good else None


# ----------------------------------------------------------------------------- offline engine
def _median_time(fn: Any, inputs: dict[str, np.ndarray], repeats: int, min_seconds: float = 1.0) -> float:
    """Median wall time of `fn(inputs)` over at least `repeats` calls and `min_seconds` (a shared
    machine's background load comes and goes: a longer window averages over it)."""
    return _median_times(fn, inputs, repeats, min_seconds)[0]


def _median_times(fn: Any, inputs: dict[str, np.ndarray], repeats: int, min_seconds: float = 1.0) -> tuple[float, float]:
    """(median wall seconds, median process CPU seconds: every thread) of one `fn(inputs)` call."""
    fn(inputs)  # warm
    walls: list[float] = []
    cpus: list[float] = []
    ends = time.perf_counter() + min_seconds
    while len(walls) < repeats or time.perf_counter() < ends:
        t0, c0 = time.perf_counter(), time.process_time()
        fn(inputs)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def offline_scaling(repo: Path, model: str, version: int | None, runtime: str,
                    batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32), repeats: int = 7) -> list[dict[str, Any]]:
    """Milliseconds per row of the encoder and the IDM called directly at each batch size: how much
    a bigger batch saves per row on this machine, i.e. the most batching can gain."""
    import torch

    from exporters.components import random_inputs
    from exporters.runtime import load_model

    loaded = load_model(repo, model, version, runtime)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for b in batches:
        row: dict[str, Any] = {"batch": b}
        for name, steps in (("encoder", 1), ("idm", 2)):
            comp = loaded.components[name]
            x = {k: v.numpy() for k, v in random_inputs(comp.inputs, b, steps, loaded.config, gen).items()}
            row[f"{name}_ms_per_row"] = 1000.0 * _median_time(comp.run, x, repeats) / b
        rows.append(row)
    return rows


def offline_latent_actions_rps(repo: Path, model: str, version: int | None, runtime: str, frames: int,
                               batches: dict[str, int], repeats: int = 7) -> dict[str, Any]:
    """Clips per second the engine alone sustains for /v1/latent-actions: encoder and IDM called
    directly at the given batch sizes (rows: one tubelet / one state pair each), no HTTP, no decoding."""
    import torch

    from exporters.components import random_inputs
    from exporters.runtime import load_model

    loaded = load_model(repo, model, version, runtime)
    tubelet = loaded.config.encoder.tubelet
    states = frames // tubelet
    rows = {"encoder": states, "idm": states - 1}  # rows one request puts in each component
    steps = {"encoder": 1, "idm": 2}  # as the engine sends them: one tubelet, one pair per row
    gen = torch.Generator().manual_seed(0)
    per_request_s, per_request_cpu_s, per_batch = 0.0, 0.0, {}
    for name, n_rows in rows.items():
        comp = loaded.components[name]
        b = max(1, int(batches.get(name, 1)))
        x = {k: v.numpy() for k, v in random_inputs(comp.inputs, b, steps[name], loaded.config, gen).items()}
        seconds, cpu_seconds = _median_times(comp.run, x, repeats)
        per_batch[name] = {"batch": b, "batch_ms": 1000.0 * seconds, "batch_cpu_ms": 1000.0 * cpu_seconds}
        per_request_s += n_rows * seconds / b
        per_request_cpu_s += n_rows * cpu_seconds / b
    return {"rps": 1.0 / per_request_s, "cpu_ms_per_request": 1000.0 * per_request_cpu_s, "components": per_batch}


# ----------------------------------------------------------------------------- the whole comparison
def _server_args(opts: ServeBench, max_batch_size: int | None) -> list[str]:
    args = ["--repo", str(opts.repo), "--model", opts.model, "--runtime", opts.runtime, "--log-level", "warning"]
    if opts.version is not None:
        args += ["--version", str(opts.version)]
    if max_batch_size is not None:
        args += ["--max-batch-size", str(max_batch_size)]
    if opts.max_queue_delay_ms is not None:
        args += ["--max-queue-delay-ms", str(opts.max_queue_delay_ms)]
    return args


def _label(info: dict[str, Any], component: str) -> str:
    limit = info["components"][component]["max_batch_size"]
    return "unbatched" if limit == 1 else f"batching<={limit}"


def run_spawned(opts: ServeBench, workdir: Path) -> list[dict[str, Any]]:
    """Batching on, then off, each on its own fresh `lawm serve` process: the sweep of each, and the
    offline engine timed right after that server stopped (closest to the load it ran under)."""
    results = []
    for name, limit in (("on", opts.max_batch_size), ("off", 1)):
        port = free_port()
        server = ServerProcess(lawm_serve_command(port, _server_args(opts, limit)), port, workdir / f"serve-{name}.log")
        with server.start(timeout_s=1800):
            result = asyncio.run(sweep(server.url, opts.endpoint, opts.rates, opts, cpu=server.cpu_seconds))
            if name == "on" and opts.endpoint == "latent-actions":  # planning at a p99 target, same server
                result["plan"] = asyncio.run(sweep(server.url, "plan", opts.plan_rates, opts, cpu=server.cpu_seconds))
        _add_offline(result, opts.repo, opts)
        results.append(result)
    return results


def _add_offline(result: dict[str, Any], repo: Path, opts: ServeBench) -> None:
    """The offline engine's clips/s at the batch sizes this server formed at saturation."""
    if opts.endpoint != "latent-actions" or not result["rows"]:
        return
    info, best = result["info"], saturation(result["rows"])
    batches = {c: round(f["mean_batch"]) for c, f in best.get("components", {}).items()}
    result["offline"] = offline_latent_actions_rps(repo, info["name"], info["version"], info["runtime"],
                                                   opts.frames, batches)


def compare(opts: ServeBench, *, url: str | None = None, spawn: bool = False, offline_repo: Path | None = None,
            workdir: Path | None = None) -> dict[str, Any]:
    """The figures of `lawm bench serve`, as the JSON payload (rows, tables, summary, verdict)."""
    from training.cli_kit import machine

    if spawn == (url is not None):
        raise ValueError("give either --url URL (a running server) or --spawn (start the servers here)")
    if spawn:
        with tempfile.TemporaryDirectory(prefix="lawm-bench-serve-") as tmp:
            results = run_spawned(opts, workdir or Path(tmp))
        offline_repo = opts.repo
    else:
        assert url is not None
        results = [asyncio.run(sweep(url, opts.endpoint, opts.rates, opts))]
    main = "encoder" if opts.endpoint == "latent-actions" else "world_model_step"
    rows, summary = [], []
    for result in results:
        label = _label(result["info"], main)
        rows += [_flat(r, label) for r in result["rows"]]
        best = saturation(result["rows"])
        line: dict[str, Any] = {
            "server": label,
            "saturation_rps": best["throughput_rps"],
            "at_rate_rps": best["rate_rps"],
            "p99_ms": best["p99_ms"],
            **{f"{c}_batch": f["mean_batch"] for c, f in best.get("components", {}).items()},
        }
        if offline_repo is not None and "offline" not in result:
            _add_offline(result, offline_repo, opts)
        if "offline" in result:
            line["offline_rps"] = result["offline"]["rps"]
            line["share_of_offline"] = best["throughput_rps"] / result["offline"]["rps"]
        cpu_ms = _flat(best, label)["cpu_ms_per_ok"]
        if cpu_ms is not None:  # CPU time per answered request: the same figures, free of the host's other load
            line["cpu_ms_per_request"] = cpu_ms
            if "offline" in result:
                line["offline_cpu_ms_per_request"] = result["offline"]["cpu_ms_per_request"]
                line["cpu_share_of_offline"] = result["offline"]["cpu_ms_per_request"] / cpu_ms
        summary.append(line)
    payload: dict[str, Any] = {
        "benchmark": "serve",
        "title": f"Serving /v1/{opts.endpoint} under open-loop Poisson load"
        + (": dynamic batching on vs off" if len(results) == 2 else ""),
        "machine": machine(),
        "endpoint": opts.endpoint,
        "duration_s": opts.duration_s,
        "clip": f"{opts.frames} frames of {opts.clip or 'carphone_pristine'} at the model's size and fps, uploaded as MP4",
        "statistic": "per rate: throughput = answered 200 / (first send to last answer); latency from each "
        "request's scheduled send time (no coordinated omission); mean_batch, queue_ms (summed over "
        "components, per request) and compute_ms (summed, per batch) from the server's /metrics; saturation = "
        "the rate with the highest throughput; offline = the same runtime's components called directly at the "
        "served mean batch size (median over >= 1 s), timed right after that server stopped; cpu_ms_per_ok = the "
        "server process's CPU seconds (every thread, from /proc) per answered request, and offline_cpu the process "
        "CPU time of the same component calls: figures that barely move with other processes' load on a shared host",
        "rows": rows,
        "tables": [{"title": "At saturation", "rows": summary}],
        "details": results,
    }
    verdicts = []
    if len(summary) == 2:
        speedup = summary[0]["saturation_rps"] / summary[1]["saturation_rps"]
        payload["batching_speedup"] = speedup
        verdicts.append(f"batching x{speedup:.2f} unbatched throughput at saturation (bar: >= 2): "
                        f"{'pass' if speedup >= 2 else 'not met'}")
        if "cpu_ms_per_request" in summary[0] and "cpu_ms_per_request" in summary[1]:
            cpu_speedup = summary[1]["cpu_ms_per_request"] / summary[0]["cpu_ms_per_request"]
            payload["batching_cpu_speedup"] = cpu_speedup
            verdicts.append(f"batching needs x{cpu_speedup:.2f} less server CPU time per request")
    if "share_of_offline" in summary[0]:
        share = summary[0]["share_of_offline"]
        verdicts.append(f"served {share:.0%} of the offline engine's throughput at the same batch size (bar: >= 80%): "
                        f"{'pass' if share >= 0.8 else 'not met'}")
        if "cpu_share_of_offline" in summary[0]:
            verdicts.append(f"by CPU time per request, served = {summary[0]['cpu_share_of_offline']:.0%} of offline")
    plan = results[0].get("plan") if spawn else (results[0] if opts.endpoint == "plan" else None)
    if plan is not None:
        payload["tables"].append({"title": f"Planning (/v1/plan) at a p99 target of {opts.p99_target_ms:g} ms",
                                  "rows": _plan_rows(plan, opts.p99_target_ms)})
        best_plan = at_p99_target(plan["rows"], opts.p99_target_ms) if plan["rows"] else None
        payload["plan_rps_at_p99_target"] = best_plan["throughput_rps"] if best_plan else None
        verdicts.append(_plan_verdict(plan, best_plan, opts.p99_target_ms))
    if offline_repo is not None and opts.endpoint == "latent-actions":
        info = results[0]["info"]
        payload["tables"].append({
            "title": f"Offline engine ({info['runtime']}): time per row by batch size",
            "rows": offline_scaling(offline_repo, info["name"], info["version"], info["runtime"]),
        })
    payload["verdict"] = "; ".join(verdicts)
    return payload


def _plan_rows(plan: dict[str, Any], target_ms: float) -> list[dict[str, Any]]:
    if not plan["rows"]:
        return [{"status": f"skipped: {plan.get('skipped', 'no rows')}"}]
    return [{**_flat(r, "batching"), "meets_p99": r["p99_ms"] is not None and r["p99_ms"] <= target_ms}
            for r in plan["rows"]]


def _plan_verdict(plan: dict[str, Any], best: dict[str, Any] | None, target_ms: float) -> str:
    if not plan["rows"]:
        return f"planning not measured: {plan.get('skipped')}"
    if best is None:
        return f"planning: no tried rate kept p99 <= {target_ms:g} ms"
    return f"planning: {best['throughput_rps']:.2f} plans/s with p99 {best['p99_ms']:.0f} ms <= {target_ms:g} ms"
