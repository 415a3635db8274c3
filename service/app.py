"""The FastAPI app: `create_app(settings)` builds it; its lifespan runs the model's life.

Start: the server listens at once (`/livez` answers 200) while, in the background, the model is
exported when the repository lacks it (in a child process: `service.exporting`), loaded and
verified (one batcher per component), and warmed at the shapes serving uses. `/readyz` says what
it is waiting for, and turns 200 once warm. A failure at any step (a failed export, a tampered
file) is logged and leaves the server live and unready, `/readyz` answering 503 with the reason.
Stop (uvicorn first finishes the requests it accepted): not ready -> drain jobs and batchers
within `drain_timeout_s` -> exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI

from service.auth import ApiKeyMiddleware
from service.errors import install_error_handlers
from service.exporting import ExportFailed, ExportProgress, Target, export_checkpoint, run_export
from service.inference.cache import build_caches
from service.inference.engine import Engine
from service.inference.planner import PlanSlots
from service.inference.sessions import SessionStore
from service.inference.stage import Stage
from service.jobs import build_job_runner
from service.metrics import MetricsMiddleware, ServiceMetrics
from service.middleware import RequestContextMiddleware
from service.openapi import build_openapi
from service.routes import console, health, jobs, kserve, sessions, v1
from service.settings import Settings, get_settings
from service.startup import export_request
from training import __version__

log = logging.getLogger("lawm.service")

DESCRIPTION = """Latent action world models as a service: latent actions from video, world-model rollouts,
goal-conditioned planning for robots, action-transfer renders (async jobs), and KServe v2 for the raw
components. Errors are `{"error": {"code", "message", "hint", "request_id"}}`."""


async def _start(app: FastAPI) -> None:
    """Export the model when the repository lacks it (in a child process), load and verify it, warm
    it. A failure leaves the server live and unready: /readyz answers 503 with the reason (a
    restart would only fail the same way, or redo minutes of export), and the log says it too."""
    settings: Settings = app.state.settings
    engine: Engine = app.state.engine
    phase = "export"
    try:
        request = await asyncio.to_thread(export_request, settings)
        if request is not None:
            engine.state, engine.export = "exporting", ExportProgress()
            await run_export(request, engine.export, target=app.state.export_target)
            engine.load_seconds["export"] = time.monotonic() - engine.export.started
        phase = "loading"
        await engine.load()
        phase = "warm-up"
        await engine.warm()
        for name, seconds in engine.load_seconds.items():
            app.state.metrics.startup_seconds.labels(phase=name).set(seconds)
    except Exception as e:  # the server stays live but never ready; /readyz says why
        reason = str(e) if isinstance(e, ExportFailed) else f"{type(e).__name__}: {e}"
        engine.state, engine.error = "failed", f"{phase} failed: {reason}"
        log.error("cannot serve the model: %s", engine.error)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    engine = Engine(settings, app.state.metrics)
    app.state.engine = engine
    app.state.goals, app.state.latents = build_caches(settings)  # shared through Redis when configured
    app.state.plan_slots = PlanSlots(settings.max_concurrent_plans, nice=settings.worker_nice)
    app.state.decode_stage = Stage(
        "decode", settings.decode_concurrency, settings.decode_max_backlog_frames, settings.decode_max_wait_s,
        app.state.metrics.batcher("decode"), nice=settings.worker_nice,
    )
    app.state.sessions = SessionStore(settings.max_sessions)  # per replica: see service.inference.sessions
    app.state.jobs = build_job_runner(settings, engine, app.state.metrics)  # its jobs wait for the engine
    await app.state.jobs.start()  # the Redis runner's background work; nothing for the in-process one
    # Export, load and warm in the background: the server listens (and /livez answers) at once.
    app.state.warmed = asyncio.create_task(_start(app), name="start-up")
    try:
        yield
    finally:
        await shutdown(app)


async def shutdown(app: FastAPI) -> None:
    """Not ready, then drain the jobs and the batchers within `drain_timeout_s` (shared)."""
    settings: Settings = app.state.settings
    engine: Engine = app.state.engine
    engine.stop_accepting()
    app.state.warmed.cancel()  # an export in progress stops its child
    with contextlib.suppress(asyncio.CancelledError):
        await app.state.warmed
    app.state.sessions.cancel_speculation()  # plans made ahead for steps that will not come
    ends = time.monotonic() + settings.drain_timeout_s
    unfinished = await app.state.jobs.drain(settings.drain_timeout_s)
    if unfinished:
        log.warning("%d job(s) did not finish before shutdown", unfinished)
    await engine.drain(max(0.0, ends - time.monotonic()))
    app.state.plan_slots.shutdown()
    app.state.decode_stage.close()
    for cache in (app.state.goals, app.state.latents):
        await cache.close()
    log.info("drained; bye")


def create_app(settings: Settings | None = None, export_target: Target = export_checkpoint) -> FastAPI:
    """The service app for `settings` (default: `get_settings()`, i.e. the LAWM_* environment).
    `export_target` is what the export child runs (tests give a stand-in)."""
    settings = settings if settings is not None else get_settings()
    metrics = ServiceMetrics()
    app = FastAPI(title="lawm", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.export_target = export_target
    app.state.metrics = metrics
    app.dependency_overrides[get_settings] = lambda: settings
    install_error_handlers(app)
    for module in (health, v1, sessions, jobs, kserve):
        app.include_router(module.router)
    console.mount_console(app)  # the web console: its data routes, its page at / and assets under /static
    # Added innermost first: auth sits inside the metrics (401s are counted) and the request context.
    exempt = None
    if settings.api_keys:
        # The console's page and assets hold no data and must load before the user can type a key.
        exempt = [*settings.auth_exempt, *console.public_paths()]
        app.add_middleware(ApiKeyMiddleware, keys=settings.api_keys, exempt=exempt)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(
        RequestContextMiddleware, max_json_bytes=settings.max_json_bytes, max_upload_bytes=settings.max_upload_bytes,
        body_timeout_s=settings.body_timeout_s,
    )
    auth_exempt = None if exempt is None else frozenset(p.rstrip("/") or "/" for p in exempt)
    app.openapi = lambda: build_openapi(app, auth_exempt)  # type: ignore[method-assign]
    return app
