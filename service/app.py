"""The FastAPI app: `create_app(settings)` builds it; its lifespan runs the model's life.

Start: load and verify the model (a missing or tampered model stops the server with its message),
start one batcher per component and the job runner, then warm every component at every batch
size in the background while `/livez` already answers; `/readyz` turns 200 once warm.
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
from training import __version__

log = logging.getLogger("lawm.service")

DESCRIPTION = """Latent action world models as a service: latent actions from video, world-model rollouts,
goal-conditioned planning for robots, action-transfer renders (async jobs), and KServe v2 for the raw
components. Errors are `{"error": {"code", "message", "hint", "request_id"}}`."""


async def _warm(engine: Engine) -> None:
    try:
        await engine.warm()
    except Exception as e:  # the server stays live but never ready; /readyz says why
        engine.state, engine.error = "failed", f"warm-up failed: {type(e).__name__}: {e}"
        log.exception("warm-up failed; the server will not become ready")


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    engine = Engine(settings, app.state.metrics)
    app.state.engine = engine
    app.state.goals, app.state.latents = build_caches(settings)  # shared through Redis when configured
    app.state.plan_slots = PlanSlots(settings.max_concurrent_plans)
    app.state.decode_stage = Stage(
        "decode", settings.decode_concurrency, settings.decode_max_backlog_frames, settings.decode_max_wait_s,
        app.state.metrics.batcher("decode"),
    )
    app.state.sessions = SessionStore(settings.max_sessions)  # per replica: see service.inference.sessions
    try:
        await engine.load()
    except Exception as e:
        engine.state, engine.error = "failed", f"{type(e).__name__}: {e}"
        log.error("cannot serve the model: %s", e)
        raise
    app.state.jobs = build_job_runner(settings, engine, app.state.metrics)
    await app.state.jobs.start()  # the Redis runner's background work; nothing for the in-process one
    app.state.warmed = asyncio.create_task(_warm(engine), name="warm-up")
    try:
        yield
    finally:
        await shutdown(app)


async def shutdown(app: FastAPI) -> None:
    """Not ready, then drain the jobs and the batchers within `drain_timeout_s` (shared)."""
    settings: Settings = app.state.settings
    engine: Engine = app.state.engine
    engine.state = "draining"
    app.state.warmed.cancel()
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


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service app for `settings` (default: `get_settings()`, i.e. the LAWM_* environment)."""
    settings = settings if settings is not None else get_settings()
    metrics = ServiceMetrics()
    app = FastAPI(title="lawm", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
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
