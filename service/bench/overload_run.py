"""`lawm bench serve --overload 2,3 [--peer litserve]`: saturation, then load past it, on lawm and on
a LitServe peer doing the same work (`service.bench.peer`), both driven by the same load generator
with the same upload.

With --spawn both servers run side by side and the load alternates between them rate by rate, so a
shared host's background load falls on both alike; the one not under load is paused (SIGSTOP), as
an idle LitServe still polls its queues (about a fifth of a core here):

1. warm-up requests to each; the peer's latents checked against lawm's on the bench's clip;
2. a sweep over `--rates` (each server stops at the first rate it could not keep up with): each
   server's saturation = its highest answered-200 throughput;
3. load at multiples of each server's own saturation: lawm at 0.8x and every `--overload` multiple
   (the overload rows, `service.bench.overload`), the peer at 0.8x and 2x.

Between runs the bench waits until the server that just ran is idle again (its CPU time grows no
faster than it did idle after warm-up): requests a client gave up on may still be queued in a server
that does not shed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from service.bench.loadgen import RequestSpec, client_for, open_loop, poisson_schedule, run_rate
from service.bench.overload import BASELINE, overload_row, overload_verdicts, peer_ratios, plateau_reached
from service.bench.processes import ServerProcess, free_port, lawm_serve_command
from service.bench.serve import ServeBench, _flat, _server_args, model_info, request_for, saturation

PEERS = ("litserve",)
PEER_MULTIPLES = (BASELINE, 2.0)  # where the issue compares lawm with its peer


@dataclass(frozen=True)
class OverloadBench:
    """Past-saturation multiples for lawm, and the peer to compare with (spawned only)."""

    multiples: tuple[float, ...] = (2.0, 3.0)
    peer: str | None = None
    peer_max_batch_size: int | None = None  # requests per LitServe batch; None: lawm's rows per batch / rows per clip
    peer_workers: int = 1  # LitServe inference worker processes
    settle_s: float = 60.0  # the longest wait for a server to go idle between runs
    # spawned servers' niceness: both servers alike yield to the load generator sharing their host, so
    # its schedule holds (what a client on its own machine would see); 0 to run them as they come
    server_nice: int = 5

    def __post_init__(self) -> None:
        if not self.multiples or any(m <= 1 for m in self.multiples):
            raise ValueError(f"--overload takes multiples of the saturation rate above 1, e.g. 2,3; got {self.multiples}")
        if self.peer is not None and self.peer not in PEERS:
            raise ValueError(f"--peer must be one of {PEERS}, got {self.peer!r}")

    def lawm_multiples(self) -> list[float]:
        extra = (2.0,) if self.peer else ()  # the peer comparison needs lawm at 2x too
        return sorted({BASELINE, *self.multiples, *extra})


@dataclass
class Target:
    """One server under load: its name, address, and how to read its CPU seconds (spawned only)."""

    name: str
    url: str
    cpu: Callable[[], float | None] | None = None
    metrics: bool = False  # scrape /metrics around each sweep rate (lawm's batching figures)
    pause: Callable[[], None] | None = None  # spawned: SIGSTOP / SIGCONT while the other one is measured
    resume: Callable[[], None] | None = None
    idle_cpu: float = 0.0  # cores it uses idle (measured after warm-up)


async def _focus(target: Target, targets: list[Target]) -> None:
    """Pause every server but `target`, and resume it (letting its overdue timers, e.g. keep-alive
    closes, fire before the load starts)."""
    for other in targets:
        if other is not target and other.pause is not None:
            other.pause()
    if target.resume is not None:
        target.resume()
        await asyncio.sleep(0.3)


async def _cpu_rate(target: Target, seconds: float) -> float:
    """Cores `target` uses over the next `seconds` (0 where its CPU time cannot be read)."""
    c0 = target.cpu() if target.cpu else None
    await asyncio.sleep(seconds)
    c1 = target.cpu() if target.cpu else None
    return (c1 - c0) / seconds if c0 is not None and c1 is not None else 0.0


# ----------------------------------------------------------------------------- sending
async def _settle(target: Target, limit_s: float, margin: float = 0.1, step_s: float = 0.5) -> float:
    """Wait until the server uses < its idle cores + `margin` over `step_s` (at most `limit_s`); seconds waited."""
    if target.cpu is None:
        return 0.0
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if await _cpu_rate(target, step_s) < target.idle_cpu + margin:
            break
    return time.monotonic() - t0


async def _warm(client: httpx.AsyncClient, target: Target, spec: RequestSpec, opts: ServeBench) -> np.ndarray:
    """Warm-up requests (not counted); the last one's latents."""
    latents = None
    for _ in range(max(opts.warmup_requests, 1)):
        r = await client.request(spec.method, spec.path, content=spec.content, headers=spec.headers,
                                 timeout=opts.timeout_s)
        if r.status_code != 200:
            raise RuntimeError(f"warm-up of {target.name} ({spec.path}) answered {r.status_code}: {r.text[:500]}")
        latents = np.asarray(r.json()["latents"], dtype=np.float64)
    assert latents is not None
    return latents


async def _sweep_row(client: httpx.AsyncClient, target: Target, spec: RequestSpec, rate: float, seed: int,
                     opts: ServeBench) -> dict[str, Any]:
    cpu0 = target.cpu() if target.cpu else None
    row = await run_rate(client, spec, rate, opts.duration_s, seed=seed, timeout_s=opts.timeout_s,
                         api_key=opts.api_key, metrics=target.metrics)
    cpu1 = target.cpu() if target.cpu else None
    if cpu0 is not None and cpu1 is not None:
        row["server_cpu_s"] = cpu1 - cpu0
    row["loadavg_1m"] = os.getloadavg()[0]
    return row


async def _overload_row(client: httpx.AsyncClient, target: Target, spec: RequestSpec, multiple: float,
                        saturation_rps: float, seed: int, opts: ServeBench) -> dict[str, Any]:
    rate = multiple * saturation_rps
    cpu0 = target.cpu() if target.cpu else None
    outcomes, start = await open_loop(client, spec, poisson_schedule(rate, opts.duration_s, seed), opts.timeout_s)
    cpu1 = target.cpu() if target.cpu else None
    row = overload_row(outcomes, start, rate, opts.duration_s, saturation_rps, multiple, server=target.name)
    if cpu0 is not None and cpu1 is not None and row["ok"]:
        row["cpu_ms_per_ok"] = 1000.0 * (cpu1 - cpu0) / row["ok"]  # every process of the server, per 200
    row["loadavg_1m"] = os.getloadavg()[0]
    return row


async def measure(targets: list[Target], opts: ServeBench, ob: OverloadBench) -> dict[str, Any]:
    """Steps 1-3 of the module docstring on `targets` (lawm first); the raw figures."""
    clients = {t.name: client_for(t.url) for t in targets}
    async with contextlib.AsyncExitStack() as stack:
        for c in clients.values():
            await stack.enter_async_context(c)
        lawm = targets[0]
        info = await model_info(clients[lawm.name], opts.api_key)
        spec = await request_for(clients[lawm.name], "latent-actions", info, opts)
        assert spec is not None
        answers = {t.name: await _warm(clients[t.name], t, spec, opts) for t in targets}
        diffs = {t.name: float(np.max(np.abs(answers[t.name] - answers[lawm.name]))) for t in targets[1:]}
        for t in targets:
            await _focus(t, targets)
            t.idle_cpu = await _cpu_rate(t, 1.0)

        sweeps: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
        for i, rate in enumerate(opts.rates):
            for t in targets:
                if plateau_reached(sweeps[t.name], opts.duration_s):
                    continue  # past its saturation already: higher rates only queue (or shed) more
                await _focus(t, targets)
                sweeps[t.name].append(await _sweep_row(clients[t.name], t, spec, rate, opts.seed + i, opts))
                await _settle(t, ob.settle_s)
        sat = {t.name: saturation(sweeps[t.name])["throughput_rps"] for t in targets}

        rows: list[dict[str, Any]] = []
        for j, multiple in enumerate(ob.lawm_multiples()):
            for t in targets:
                if t is not lawm and multiple not in PEER_MULTIPLES:
                    continue
                seed = opts.seed + 100 + j  # the same arrivals for both servers at a multiple
                await _focus(t, targets)
                rows.append(await _overload_row(clients[t.name], t, spec, multiple, sat[t.name], seed, opts))
                await _settle(t, ob.settle_s)
        for t in targets:
            if t.resume is not None:
                t.resume()
    idle = {t.name: t.idle_cpu for t in targets}
    return {"info": info, "sweeps": sweeps, "saturation": sat, "rows": rows, "latents_max_abs_diff": diffs,
            "idle_cpu": idle}


# ----------------------------------------------------------------------------- servers
def _peer_batch(info: dict[str, Any], frames: int, wanted: int | None) -> int:
    """Requests per LitServe batch: as many clips as fill lawm's encoder batch (rows = tubelets)."""
    if wanted is not None:
        return wanted
    rows_per_clip = max(frames // int(info["tubelet"]), 1)
    return max(int(info["components"]["encoder"]["max_batch_size"]) // rows_per_clip, 1)


def _batch_timeout_ms(opts: ServeBench) -> float:
    from service.settings import Settings

    return opts.max_queue_delay_ms if opts.max_queue_delay_ms is not None else Settings().max_queue_delay_ms


def run_spawned(opts: ServeBench, ob: OverloadBench, workdir: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """lawm (and the peer) started here, measured, stopped; (figures, the peer's set-up or None)."""
    from service.bench.peer import peer_command

    with contextlib.ExitStack() as stack:
        port = free_port()
        server = ServerProcess(lawm_serve_command(port, _server_args(opts, opts.max_batch_size)), port,
                               workdir / "serve.log", nice=ob.server_nice)
        stack.enter_context(server.start(timeout_s=1800))
        targets = [Target("lawm", server.url, server.cpu_seconds, metrics=True, pause=server.pause,
                          resume=server.resume)]
        peer_setup = None
        if ob.peer:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                info = _info(client, opts)
            peer_port = free_port()
            batch = _peer_batch(info, opts.frames, ob.peer_max_batch_size)
            delay_ms = _batch_timeout_ms(opts)
            command = peer_command(peer_port, opts.repo, opts.model, opts.version, max_batch_size=batch,
                                   batch_timeout_ms=delay_ms, workers=ob.peer_workers)
            peer = ServerProcess(command, peer_port, workdir / "peer.log", ready_path="/health", group=True,
                                 nice=ob.server_nice)
            stack.enter_context(peer.start(timeout_s=600))
            targets.append(Target(ob.peer, peer.url, peer.cpu_seconds, pause=peer.pause, resume=peer.resume))
            peer_setup = {"server": f"litserve {importlib.metadata.version('litserve')}", "max_batch_size": batch,
                          "batch_timeout_ms": delay_ms, "workers_per_device": ob.peer_workers}
        return asyncio.run(measure(targets, opts, ob)), peer_setup


def _info(client: httpx.Client, opts: ServeBench) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {opts.api_key}"} if opts.api_key else {}
    r = client.get("/v1/models", headers=headers)
    r.raise_for_status()
    return dict(r.json()["models"][0])


# ----------------------------------------------------------------------------- the payload
def _service_settings() -> dict[str, Any]:
    """The admission settings the spawned lawm read (this environment's LAWM_*, else the defaults)."""
    from service.settings import Settings

    s = Settings()
    return {"decode_concurrency": s.decode_concurrency, "decode_max_wait_s": s.decode_max_wait_s,
            "max_queue_wait_s": s.max_queue_wait_s, "max_batch_size": s.max_batch_size,
            "max_queue_delay_ms": s.max_queue_delay_ms}


def run(opts: ServeBench, ob: OverloadBench, *, url: str | None = None, spawn: bool = False,
        workdir: Path | None = None) -> dict[str, Any]:
    """The figures of `lawm bench serve --overload`, as the JSON payload (rows, tables, verdict)."""
    from training.cli_kit import load_average, machine

    if spawn == (url is not None):
        raise ValueError("give either --url URL (a running server) or --spawn (start the servers here)")
    if opts.endpoint != "latent-actions":
        raise ValueError("--overload measures /v1/latent-actions (--endpoint latent-actions)")
    if ob.peer and not spawn:
        raise ValueError("--peer starts its server here: use it with --spawn")
    before = os.getloadavg()
    if spawn:
        with tempfile.TemporaryDirectory(prefix="lawm-bench-overload-") as tmp:
            figures, peer_setup = run_spawned(opts, ob, workdir or Path(tmp))
    else:
        assert url is not None
        figures, peer_setup = asyncio.run(measure([Target("lawm", url, metrics=True)], opts, ob)), None
    after = os.getloadavg()
    return payload(figures, opts, ob, peer_setup, machine(), load_average(before, after))


def payload(figures: dict[str, Any], opts: ServeBench, ob: OverloadBench, peer_setup: dict[str, Any] | None,
            machine: str, load: str) -> dict[str, Any]:
    sat = figures["saturation"]
    rows = figures["rows"]
    lawm_rows = [r for r in rows if r["server"] == "lawm"]
    lines, passed = overload_verdicts(lawm_rows, sat["lawm"])
    sweep_rows = [{**_flat(r, name), "plateau": plateau_reached([r], opts.duration_s)}
                  for name, rs in figures["sweeps"].items() for r in rs]
    for name, rs in figures["sweeps"].items():
        if not plateau_reached(rs, opts.duration_s):
            lines.append(f"{name} kept up with every rate tried: its saturation ({sat[name]:.1f}/s) is a floor; "
                         "raise --rates")
    tables = [{"title": "Saturation sweep (each server stops at the first rate it could not keep up with)",
               "rows": sweep_rows}]
    out: dict[str, Any] = {
        "benchmark": "serve-overload",
        "title": "Serving /v1/latent-actions past saturation: load shedding"
        + (f", and a {ob.peer} peer doing the same work" if ob.peer else ""),
        "machine": machine,
        "load_average": load,
        "duration_s": opts.duration_s,
        "clip": f"{opts.frames} frames of {opts.clip or 'carphone_pristine'} at the model's size and fps, uploaded as MP4",
        "settings": _service_settings(),
        "server_nice": ob.server_nice,
        "saturation_rps": sat,
        "idle_cpu_cores": figures.get("idle_cpu"),  # what each uses doing nothing (paused while the other runs)
        "statistic": "open-loop Poisson load, each rate for duration_s; latency from each request's scheduled send "
        "time; saturation = a server's highest answered-200 throughput in the sweep (200s / first send to last "
        "answer; the sweep goes on until a rate's 200s fall below 90% of the offered rate); multiple = offered "
        "rate / that server's own saturation; excess = sent - saturation x duration; "
        "excess_shed = 429s / excess; shed_fast = share of the 429s answered within 100 ms; excess_shed_fast = "
        "429s within 100 ms / excess; shed_fast_from_send = the same share from the client's actual send "
        "(send_lag_p99_ms: how far the load generator fell behind its schedule); p50/p99 of 200s only; "
        "cpu_ms_per_ok = the server's CPU seconds (every process) per 200. Servers run side by side, the load "
        "alternates between them and the one not under load is paused (SIGSTOP); the load generator shares the "
        "host (servers at server_nice, up to 512 connections)",
        "rows": rows,
        "tables": tables,
    }
    if peer_setup is not None:
        name = ob.peer
        assert name is not None
        peer_rows = [r for r in rows if r["server"] == name]
        ratios = peer_ratios({"saturation_rps": sat["lawm"], "rows": lawm_rows},
                             {"saturation_rps": sat[name], "rows": peer_rows})
        tables.append({"title": f"lawm / {name} (each at multiples of its own saturation)", "rows": ratios})
        out["peer"] = {**peer_setup, "latents_max_abs_diff": figures["latents_max_abs_diff"][name]}
        for r in ratios:
            if r["ratio"] is None:
                lines.append(f"{r['figure']}: not measured")
                continue
            lines.append(f"lawm/{name} {r['figure']}: x{r['ratio']:.2f} (bar {r['bar']}): {r['met']}")
            passed &= r["met"] == "pass"
        late = next((r for r in peer_rows if r["multiple"] == 2.0 and r["timeouts"]), None)
        if late is not None:
            lines.append(f"{name} at 2x: {late['timeouts']} client time-outs, so its p99 is a floor")
        out["peer_ratios"] = {r["figure"]: r["ratio"] for r in ratios}
    out["all_bars_met"] = passed
    out["verdict"] = "; ".join(lines)
    out["details"] = {"sweeps": figures["sweeps"], "info": {k: figures["info"].get(k) for k in
                                                            ("name", "version", "runtime", "image_size", "fps")}}
    return out


# The columns a terminal has room for (the JSON and docs keep every one).
ROW_COLUMNS = ("server", "multiple", "offered_rps", "ok_rps", "shed_429", "excess_shed", "excess_shed_fast",
               "shed_fast_from_send", "p50_ms", "p99_ms", "timeouts", "server_5xx", "send_lag_p99_ms")
SWEEP_COLUMNS = ("server", "rate_rps", "sent", "ok", "throughput_rps", "p50_ms", "p99_ms", "rejected", "plateau")


def terminal_tables(result: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(title, rows) to print: the overload rows and the sweep narrowed, the ratios as they are."""
    tables = [(result["title"], [{k: r.get(k) for k in ROW_COLUMNS} for r in result["rows"]])]
    for i, table in enumerate(result["tables"]):
        rows = [{k: r.get(k) for k in SWEEP_COLUMNS} for r in table["rows"]] if i == 0 else table["rows"]
        tables.append((table["title"], rows))
    return tables
