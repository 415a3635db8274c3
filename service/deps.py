"""What routes depend on, as `Annotated` aliases (FastAPI's "bigger applications" layout).

A route declares what it needs (`engine: EngineDep, settings: SettingsDep`) and never reads
`request.app.state` itself: the app's lifespan (`service.app`) puts the parts there, and this module
is the one place that takes them out.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.errors import ApiError
from service.inference.cache import ArrayCache
from service.inference.engine import Engine
from service.inference.errors import ModelNotReady
from service.inference.planner import PlanSlots
from service.inference.stage import Stage
from service.jobs.runner import JobService
from service.metrics import ServiceMetrics
from service.settings import Settings, get_settings

SettingsDep = Annotated[Settings, Depends(get_settings)]


def engine_if_any(request: Request) -> Engine | None:
    """The engine in whatever state it is (None before the lifespan created it): for the probes."""
    return getattr(request.app.state, "engine", None)


def get_engine(request: Request) -> Engine:
    """The app's engine, once ready; `ModelNotReady` (503 + Retry-After) while loading, warming or draining."""
    engine = engine_if_any(request)
    if engine is None or not engine.ready:
        raise ModelNotReady(engine.state if engine is not None else "starting")
    return engine


def get_jobs(request: Request) -> JobService:
    jobs: JobService | None = getattr(request.app.state, "jobs", None)
    if jobs is None:
        raise ApiError(
            503,
            "not_ready",
            "the job runner is not started yet",
            "retry shortly; GET /readyz says when",
            headers={"Retry-After": "1"},
        )
    return jobs


def jobs_if_any(request: Request) -> JobService | None:
    return getattr(request.app.state, "jobs", None)


def get_goals(request: Request) -> ArrayCache:
    """Goal states by goal id: this process's LRU, shared with every replica through Redis when set."""
    return request.app.state.goals


def get_latents(request: Request) -> ArrayCache:
    """Latent actions by clip content (see `service.inference.cache`)."""
    return request.app.state.latents


def get_plan_slots(request: Request) -> PlanSlots:
    return request.app.state.plan_slots


def get_decode_stage(request: Request) -> Stage:
    """Where uploads are decoded: bounded concurrency and admission (see `service.inference.stage`)."""
    return request.app.state.decode_stage


def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


EngineDep = Annotated[Engine, Depends(get_engine)]
MaybeEngineDep = Annotated[Engine | None, Depends(engine_if_any)]
JobsDep = Annotated[JobService, Depends(get_jobs)]
MaybeJobsDep = Annotated[JobService | None, Depends(jobs_if_any)]
GoalsDep = Annotated[ArrayCache, Depends(get_goals)]
LatentsDep = Annotated[ArrayCache, Depends(get_latents)]
PlanSlotsDep = Annotated[PlanSlots, Depends(get_plan_slots)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
DecodeDep = Annotated[Stage, Depends(get_decode_stage)]
