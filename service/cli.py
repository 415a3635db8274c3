"""The `lawm` console script: the training CLI plus the exporter and service commands.

`training` never imports `exporters` or `service` (DESIGN.md's dependency direction), so the
commands of the upper layers are registered here, on top of the training CLI.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from exporters.cli import register as register_exporters
from service.settings import Settings
from training.cli import app, bench_app
from training.cli_kit import console, friendly_errors, load_average, machine, print_table, write_json

register_exporters(app, bench_app)


def _value(field: str) -> Any:
    """A setting's default as `Settings` declares it (never copied into an option)."""
    return Settings.model_fields[field].get_default(call_default_factory=True)


def _default(field: str) -> str:
    value = _value(field)
    return "latest" if field == "version" and value is None else str(value)


def _help(text: str, field: str) -> str:
    return f"{text} (default: {_default(field)})"


# What the service commands import beyond the core install (pyproject.toml's serve extra).
SERVE_EXTRA = ("fastapi", "uvicorn", "httpx", "prometheus_client", "redis", "onnxruntime")


def _require_serve_extra(command: str) -> None:
    """One clear line, not an ImportError traceback, where `lawm` was installed without [serve]."""
    missing = [m for m in SERVE_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        console.print(f"[bold red]error:[/] lawm {command} needs {', '.join(missing)}, which this install lacks: "
                      "pip install 'lawm[serve]'", highlight=False)
        raise typer.Exit(2)


# Options `lawm serve` and `lawm worker` share: the same model, runtime and device. An option left out
# is read from its LAWM_* environment variable, then from the settings' default.
RepoOpt = Annotated[Path | None, typer.Option(help=_help("model repository", "repo"))]
ModelOpt = Annotated[str | None, typer.Option(help=_help("model name in the repository", "model"))]
VersionOpt = Annotated[str | None, typer.Option(help=_help("model version, or 'latest'", "version"))]
RuntimeOpt = Annotated[str | None, typer.Option(help=_help("torch | onnxruntime | tensorrt", "runtime"))]
CheckpointOpt = Annotated[Path | None, typer.Option(help="run this checkpoint on torch instead (no export)")]
DeviceOpt = Annotated[str | None, typer.Option(help=_help("cpu | cuda | cuda:N", "device"))]
LogLevelOpt = Annotated[str, typer.Option(help="debug | info | warning | error")]


# ----------------------------------------------------------------------------- serve
@app.command()
@friendly_errors
def serve(
    repo: RepoOpt = None,
    model: ModelOpt = None,
    version: VersionOpt = None,
    runtime: RuntimeOpt = None,
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = None,
    host: Annotated[str | None, typer.Option(help=_help("address to listen on", "host"))] = None,
    port: Annotated[int | None, typer.Option(help=_help("port to listen on", "port"))] = None,
    api_key: Annotated[list[str] | None, typer.Option(help="accept this bearer key (repeat for several)")] = None,
    max_batch_size: Annotated[int | None, typer.Option(help=_help("rows per batch", "max_batch_size"))] = None,
    max_queue_delay_ms: Annotated[
        float | None, typer.Option(help=_help("milliseconds a batch waits to fill", "max_queue_delay_ms"))
    ] = None,
    log_level: LogLevelOpt = "info",
) -> None:
    """Serve a model over HTTP. With no options: the bundled demo model (exported to
    models/repository on first start, in the background while the server already answers /livez
    and /readyz) on 127.0.0.1:8000 with onnxruntime on the CPU.

    Every option is also a LAWM_* environment variable (LAWM_PORT, LAWM_API_KEYS, LAWM_MAX_FRAMES, ...);
    options win over the environment."""
    _require_serve_extra("serve")
    import logging

    from exporters.errors import ExportError
    from service import server
    from service.app import create_app
    from service.startup import check_servable, export_request, settings_from

    flags = {
        "repo": repo, "model": model, "version": version, "runtime": runtime, "checkpoint": checkpoint,
        "device": device, "host": host, "port": port, "api_keys": api_key or None,
        "max_batch_size": max_batch_size, "max_queue_delay_ms": max_queue_delay_ms,
    }
    settings = settings_from(flags)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("lawm").setLevel(log_level.upper())  # ours only: the ONNX exporter's INFO is noise
    try:
        pending = export_request(settings)
        if pending is None:  # else the server exports it in the background (service.app)
            check_servable(settings)  # a missing repository or version: one line, not a traceback from uvicorn
    except ExportError as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
        raise typer.Exit(2) from None
    if pending is not None:
        console.print(f"exporting {pending.source} to {pending.repo / pending.name}/{pending.version} in the "
                      "background (a few minutes, once); /readyz says how far", markup=False, highlight=False)
    source = settings.checkpoint or f"{settings.repo / settings.model} v{settings.version or 'latest'}"
    runtime = "torch" if settings.checkpoint else settings.runtime
    console.print(f"serving {source} on http://{settings.host}:{settings.port} ({runtime}); docs at /docs",
                  markup=False, highlight=False)
    server.run(create_app(settings), settings, settings.host, settings.port, log_level.lower())


# ----------------------------------------------------------------------------- bench serve
# (service/bench/ holds the work)
def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter(f"{option} takes comma-separated numbers, e.g. 1,2,4,8; got {text!r}") from None


@bench_app.command("serve")
@friendly_errors
def bench_serve(
    url: Annotated[str | None, typer.Option(help="a running server, e.g. http://127.0.0.1:8000")] = None,
    spawn: Annotated[bool, typer.Option(
        "--spawn", help="start `lawm serve` here twice (batching on, then --max-batch-size 1) and compare")] = False,
    endpoint: Annotated[str, typer.Option(help="latent-actions | plan")] = "latent-actions",
    rates: Annotated[str, typer.Option(help="request rates to try, per second, comma-separated")] = "1,2,4,8,16",
    duration: Annotated[float, typer.Option(help="seconds of open-loop load at each rate")] = 10.0,
    frames: Annotated[int, typer.Option(help="clip length in frames at the model's fps")] = 16,
    clip: Annotated[Path | None, typer.Option(help="video to send (default: the sample carphone_pristine)")] = None,
    plan_rates: Annotated[str, typer.Option(help="plan rates to try for the p99 target (--spawn)")] = "0.5,1,2,4",
    p99_target_ms: Annotated[float, typer.Option(help="planning latency target (p99)")] = 1000.0,
    repo: Annotated[Path | None, typer.Option(
        help=f"model repository: served by --spawn (default {_default('repo')}); with --url, also times the "
        "offline engine from it")] = None,
    model: Annotated[str, typer.Option(help="model name (--spawn)")] = _value("model"),
    version: Annotated[int | None, typer.Option(help="model version (--spawn)")] = _value("version"),
    runtime: Annotated[str, typer.Option(help="torch | onnxruntime | tensorrt (--spawn)")] = _value("runtime"),
    max_batch_size: Annotated[int | None, typer.Option(help="the batching server's rows per batch (--spawn)")] = None,
    max_queue_delay_ms: Annotated[float | None, typer.Option(help="both servers' queue delay (--spawn)")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="LAWM_BENCH_API_KEY", help="bearer key to send")] = None,
    overload: Annotated[str | None, typer.Option(
        help="instead: find saturation over --rates, then load at 0.8x and these multiples of it (e.g. 2,3): "
        "how much of the excess is shed with a quick 429, and the admitted requests' latency")] = None,
    peer: Annotated[str | None, typer.Option(
        help="with --overload --spawn: also start this peer doing the same work (litserve; pip install "
        "'lawm[bench]') and compare")] = None,
    peer_max_batch_size: Annotated[int | None, typer.Option(
        help="requests per peer batch (default: as many clips as fill lawm's encoder batch)")] = None,
    peer_workers: Annotated[int, typer.Option(help="the peer's inference worker processes")] = 1,
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the figures to this JSON file")] = None,
) -> None:
    """Open-loop load (Poisson arrivals) at fixed rates: throughput, p50/p95/p99, rejections, mean batch
    size and queue vs compute time; with --spawn, batching on vs off side by side, the share of the
    offline engine's throughput, and planning requests per second at a p99 target. With --overload,
    load past saturation instead (shedding, admitted latency), and with --peer a LitServe peer beside it."""
    _require_serve_extra("bench serve")
    import sys

    import httpx

    from service.bench.processes import ServerError
    from service.bench.serve import ServeBench, compare

    if peer is not None and importlib.util.find_spec("litserve") is None:
        console.print("[bold red]error:[/] --peer litserve needs litserve: pip install 'lawm[bench]'", highlight=False)
        raise typer.Exit(2)
    try:
        opts = ServeBench(
            endpoint=endpoint, rates=_floats(rates, "--rates"), duration_s=duration, frames=frames, clip=clip,
            plan_rates=_floats(plan_rates, "--plan-rates"), p99_target_ms=p99_target_ms, api_key=api_key,
            repo=repo or _value("repo"), model=model, version=version, runtime=runtime,
            max_batch_size=max_batch_size, max_queue_delay_ms=max_queue_delay_ms,
        )
        if overload is not None or peer is not None:
            from service.bench.overload_run import OverloadBench, run

            ob = OverloadBench(multiples=_floats(overload or "2,3", "--overload"), peer=peer,
                               peer_max_batch_size=peer_max_batch_size, peer_workers=peer_workers)
            result = run(opts, ob, url=url, spawn=spawn)  # with the load average around it
        else:
            result = compare(opts, url=url, spawn=spawn, offline_repo=repo if url else None)
    except (ValueError, ServerError, httpx.HTTPError) as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        raise typer.Exit(2) from None
    result["command"] = "lawm " + " ".join(a for a in sys.argv[1:] if a)
    if result.get("benchmark") == "serve-overload":
        from service.bench.overload_run import terminal_tables

        tables = terminal_tables(result)
    else:
        tables = [(result["title"], result["rows"])] + [(t["title"], t["rows"]) for t in result["tables"]]
    for title, rows in tables:
        print_table(title, rows)
    console.print(result["verdict"], highlight=False)
    write_json(json_path, result)


# ----------------------------------------------------------------------------- worker
@app.command()
@friendly_errors
def worker(
    redis_url: Annotated[str | None, typer.Option(help="the Redis the API replicas enqueue on (LAWM_REDIS_URL)")] = None,
    repo: RepoOpt = None,
    model: ModelOpt = None,
    version: VersionOpt = None,
    runtime: RuntimeOpt = None,
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = None,
    host: Annotated[str | None, typer.Option(help=_help("address of /livez, /readyz, /metrics", "host"))] = None,
    port: Annotated[
        int | None, typer.Option(help=_help("port of /livez, /readyz, /metrics (0: any)", "worker_port"))
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help=_help("jobs run at once", "worker_concurrency"))] = None,
    log_level: LogLevelOpt = "info",
) -> None:
    """Run transfer jobs from Redis: the same model, runtime and settings as `lawm serve`, many workers
    side by side. SIGTERM finishes running jobs (up to LAWM_DRAIN_TIMEOUT_S) and hands the rest back."""
    _require_serve_extra("worker")
    import logging

    from service import server
    from service.jobs.worker import create_worker_app
    from service.startup import ensure_exported, settings_from

    flags = {
        "redis_url": redis_url, "repo": repo, "model": model, "version": version, "runtime": runtime,
        "checkpoint": checkpoint, "device": device, "host": host, "worker_port": port,
        "worker_concurrency": concurrency,
    }
    settings = settings_from(flags)
    if not settings.redis_url:
        console.print("[bold red]error:[/] lawm worker takes its jobs from Redis: set LAWM_REDIS_URL or pass "
                      "--redis-url redis://HOST:6379/0 (the same as the API replicas')", highlight=False)
        raise typer.Exit(2)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("lawm").setLevel(log_level.upper())
    exported = ensure_exported(settings)
    if exported is not None:
        console.print(f"exported {exported} (first start)")
    source = settings.checkpoint or f"{settings.repo / settings.model} v{settings.version or 'latest'}"
    console.print(f"worker for {source} on {settings.redis_url.split('@')[-1]}; "
                  f"health on http://{settings.host}:{settings.worker_port}")
    server.run(create_worker_app(settings), settings, settings.host, settings.worker_port, "warning")


# ----------------------------------------------------------------------------- bench jobs
@bench_app.command("jobs")
@friendly_errors
def bench_jobs(
    repo: Annotated[Path, typer.Option(help="model repository (exported on first start for the demo)")] = _value("repo"),
    model: Annotated[str, typer.Option(help="model name")] = _value("model"),
    version: Annotated[int | None, typer.Option(help="model version")] = _value("version"),
    runtime: Annotated[str, typer.Option(help="torch | onnxruntime | tensorrt")] = _value("runtime"),
    jobs: Annotated[int, typer.Option(help="transfer jobs per throughput run")] = 16,
    latency_jobs: Annotated[int, typer.Option(help="one-at-a-time small jobs per path (median)")] = 10,
    drills: Annotated[bool, typer.Option(help="also SIGKILL a worker mid-job and restart Redis, with counts")] = True,
    folder: Annotated[Path, typer.Option(help="logs of the processes it starts")] = Path("runs/bench-jobs"),
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the figures to this JSON file")] = None,
) -> None:
    """Transfer jobs per second with 1 and 2 `lawm worker`s behind Redis, the latency Redis adds to a small
    job vs the in-process store, and fault drills (worker SIGKILL, Redis restart) with job counts. Starts
    its own redis-server, `lawm serve` and `lawm worker` processes on free loopback ports."""
    _require_serve_extra("bench jobs")
    import sys

    from service.bench.jobs import JobsBench, run
    from service.startup import ensure_exported, settings_from

    settings = settings_from({"repo": repo, "model": model, "version": version, "runtime": runtime})
    exported = ensure_exported(settings)  # once here, not by every process it starts
    if exported is not None:
        console.print(f"exported {exported}")
    result = run(JobsBench(repo=repo, model=model, version=version, runtime=runtime, jobs=jobs,
                           latency_jobs=latency_jobs, drills=drills, folder=folder))
    result["command"] = "lawm " + " ".join(a for a in sys.argv[1:] if a)
    print_table(result["title"], result["rows"])
    for table in result["tables"]:
        print_table(table["title"], table["rows"])
    console.print(result["verdict"], highlight=False)
    write_json(json_path, result)



def _served_url(
    stack: contextlib.ExitStack, url: str | None, repo: Path, model: str, version: int | None, runtime: str, log: Path
) -> str:
    """`url`, or a `lawm serve` of the given model started here (stopped when `stack` closes)."""
    if url is not None:
        return url
    from service.bench.processes import ServerProcess, free_port, lawm_serve_command

    port = free_port()
    args = ["--repo", str(repo), "--model", model, "--runtime", runtime,
            *(["--version", str(version)] if version is not None else [])]
    return stack.enter_context(ServerProcess(lawm_serve_command(port, args), port, log)).url  # ready once entered


# ----------------------------------------------------------------------------- bench robot
@bench_app.command("robot")
@friendly_errors
def bench_robot(
    url: Annotated[str | None, typer.Option(help="a running server (default: start `lawm serve` here)")] = None,
    repo: Annotated[Path, typer.Option(help="model repository to serve when no --url")] = _value("repo"),
    model: Annotated[str, typer.Option(help="model name (no --url)")] = _value("model"),
    version: Annotated[int | None, typer.Option(help="model version (no --url)")] = _value("version"),
    runtime: Annotated[str, typer.Option(help="torch | onnxruntime | tensorrt (no --url)")] = _value("runtime"),
    episodes: Annotated[int, typer.Option(help="episodes per policy")] = 16,
    steps: Annotated[int, typer.Option(help="control steps per episode")] = 16,
    goal_steps: Annotated[int, typer.Option(help="random-walk actions from start to goal")] = 8,
    control_hz: Annotated[float, typer.Option(help="control rate")] = 1.0,
    success_m: Annotated[float, typer.Option(help="success: final distance to the goal below this (m)")] = 0.5,
    samples: Annotated[int | None, typer.Option(help="planner samples of the first step (default: the preset's)")] = None,
    seed: Annotated[int, typer.Option(help="episode seed")] = 0,
    policy: Annotated[list[str] | None, typer.Option(help="model, labelled, random (repeatable; default: model and "
                                                     "random, and labelled with --labelled)")] = None,
    labelled: Annotated[Path | None, typer.Option(help="checkpoint whose encoder the action-labelled WM is trained "
                                                  "on (in this process) for the labelled policy")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="LAWM_BENCH_API_KEY", help="bearer key to send")] = None,
    folder: Annotated[Path, typer.Option(help="the spawned server's log")] = Path("runs/bench-robot"),
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the figures to this JSON file")] = None,
) -> None:
    """Closed-loop navigation through the served API at a fixed control rate: the robot (the navigation
    simulator) executes each action a plan session returns and sends its new frame. Success rate and
    final distance to the goal for the model and a random policy, with the achieved control rate,
    step latency p50/p99 and deadline misses. The model needs a navigation controller (3-d actions)."""
    _require_serve_extra("bench robot")
    import sys

    from service.bench.robot import RobotBench, run
    from service.client import Client

    policies = tuple(policy or (("model", "labelled", "random") if labelled else ("model", "random")))
    if "labelled" in policies and labelled is None:
        raise typer.BadParameter("the labelled policy needs --labelled CHECKPOINT (the encoder it is trained on)")
    overrides = (("samples", samples),) if samples is not None else ()
    labelled_policy = None
    if labelled is not None and "labelled" in policies:
        from service.bench.labelled import LabelledPolicy

        console.print("training the action-labelled world model for the labelled policy")
        labelled_policy = LabelledPolicy(labelled, overrides=dict(overrides), seed=seed)
    with contextlib.ExitStack() as stack:
        client, image_size = None, None
        if "model" in policies:
            url = _served_url(stack, url, repo, model, version, runtime, folder / "serve.log")
            client = stack.enter_context(Client(url, api_key=api_key, timeout_s=120.0))
            info = client.http.get("/v1/models").json()["models"][0]
            image_size = int(info["image_size"])
        elif labelled_policy is not None:
            image_size = labelled_policy.model.cfg.encoder.image_size
        bench = RobotBench(episodes=episodes, steps=steps, goal_steps=goal_steps, control_hz=control_hz,
                           success_m=success_m, image_size=image_size or 128, seed=seed, overrides=overrides,
                           policies=policies)
        load_before = os.getloadavg()
        result = run(bench, client, labelled=labelled_policy)
    result["machine"], result["load_average"] = machine(), load_average(load_before, os.getloadavg())
    result["command"] = "lawm " + " ".join(a for a in sys.argv[1:] if a)
    if client is not None:
        result["model"] = {k: info[k] for k in ("name", "version", "runtime")}
    print_table(result["title"], result["rows"])
    if result.get("verdict"):
        console.print(result["verdict"], highlight=False)
    write_json(json_path, result)



# ----------------------------------------------------------------------------- bench sessions
@bench_app.command("sessions")
@friendly_errors
def bench_sessions(
    url: Annotated[str | None, typer.Option(help="a running server (default: start `lawm serve` here)")] = None,
    repo: Annotated[Path, typer.Option(help="model repository to serve when no --url")] = _value("repo"),
    model: Annotated[str, typer.Option(help="model name (no --url)")] = _value("model"),
    version: Annotated[int | None, typer.Option(help="model version (no --url)")] = _value("version"),
    runtime: Annotated[str, typer.Option(help="torch | onnxruntime | tensorrt (no --url)")] = _value("runtime"),
    sessions: Annotated[int, typer.Option(help="concurrent sessions in the second phase")] = 4,
    steps: Annotated[int, typer.Option(help="steps per concurrent session (the first is cold)")] = 16,
    pairs: Annotated[int, typer.Option(help="warm step / cold plan pairs in the first phase")] = 8,
    control_hz: Annotated[float, typer.Option(help="control rate of every session")] = 1.0,
    samples: Annotated[int | None, typer.Option(help="planner samples of a cold plan (default: the preset's)")] = None,
    warm_samples: Annotated[int | None, typer.Option(help="samples of warm steps (default: the server's, a quarter)")] = None,
    seed: Annotated[int, typer.Option(help="episode seed")] = 0,
    api_key: Annotated[str | None, typer.Option(envvar="LAWM_BENCH_API_KEY", help="bearer key to send")] = None,
    folder: Annotated[Path, typer.Option(help="the spawned server's log")] = Path("runs/bench-sessions"),
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the figures to this JSON file")] = None,
) -> None:
    """Warm session steps vs cold POST /v1/plan on the same frame and goal (alternating, one run), then
    concurrent sessions at a control rate: p50/p99 step latency, deadline misses, achieved rate.
    The model needs a navigation controller (3-d actions)."""
    _require_serve_extra("bench sessions")
    import sys

    from service.bench.sessions import SessionBench, run
    from service.client import Client

    with contextlib.ExitStack() as stack:
        served_url = _served_url(stack, url, repo, model, version, runtime, folder / "serve.log")

        def connect() -> Client:
            return Client(served_url, api_key=api_key, timeout_s=120.0)

        client = stack.enter_context(connect())
        info = client.http.get("/v1/models").json()["models"][0]
        bench = SessionBench(sessions=sessions, steps=steps, pairs=pairs, control_hz=control_hz, seed=seed,
                             image_size=int(info["image_size"]), warm_samples=warm_samples,
                             overrides=(("samples", samples),) if samples is not None else ())
        load_before = os.getloadavg()
        result = run(bench, client, connect)
    result["machine"], result["load_average"] = machine(), load_average(load_before, os.getloadavg())
    result["command"] = "lawm " + " ".join(a for a in sys.argv[1:] if a)
    result["model"] = {k: info[k] for k in ("name", "version", "runtime")}
    print_table(result["title"], result["rows"])
    console.print(result["verdict"], highlight=False)
    write_json(json_path, result)

def main() -> None:
    app()


if __name__ == "__main__":
    main()
