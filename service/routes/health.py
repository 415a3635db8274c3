"""Probes and metrics: `/livez` (the process answers), `/readyz` (the model is exported, loaded,
verified and warmed, and the server is not draining; else what it waits for, or why it failed),
`/metrics` (Prometheus text format).

Liveness never depends on the model, so a supervisor does not kill a server that is still warming.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from service.deps import MaybeEngineDep, MaybeJobsDep, MetricsDep

router = APIRouter(tags=["health"])


class Readiness(BaseModel):
    """/readyz's answer, 200 and 503 alike (a probe reads `ready`, a person `state` and `error`)."""

    ready: bool
    state: str = Field(description="starting, loading, warming, ready, draining, stopped or failed")
    error: str | None = Field(None, description="why the model cannot be served (present only then)")
    redis: dict[str, Any] | None = Field(None, description="the job store's Redis, when LAWM_REDIS_URL is set "
                                         "(reported, not required)")


@router.get("/livez")
async def livez() -> dict[str, bool]:
    """200 while the process runs."""
    return {"live": True}


@router.get(
    "/readyz",
    responses={200: {"model": Readiness, "description": "ready"},
               503: {"model": Readiness, "description": "exporting, loading, warming, draining or failed"}},
)
async def readyz(engine: MaybeEngineDep, jobs: MaybeJobsDep) -> Any:
    """200 once the model is exported (first start), loaded, checksum-verified and warmed; 503 before
    that, while draining, and after a failed start. `waiting_for` says what it waits for, e.g.
    "export (3/8 components, 1m20s elapsed, ~2m left)" or "warm-up (12/40 shapes)"; `error` why a
    start failed (the server stays up, unready, until restarted)."""
    state = engine.state if engine is not None else "starting"
    body: dict[str, Any] = {"ready": state == "ready", "state": state}
    waiting_for = engine.waiting_for() if engine is not None else "starting"
    if waiting_for is not None:
        body["waiting_for"] = waiting_for
    if engine is not None and engine.error:
        body["error"] = engine.error
    # Redis (LAWM_REDIS_URL) is reported, not required: when it is down only the job endpoints
    # answer 503, so the replica stays in its Service and keeps serving the synchronous endpoints.
    dependency = await jobs.dependency() if jobs is not None else None
    if dependency is not None:
        body["redis"] = dependency
    if state != "ready":
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
    return body


@router.get("/metrics", response_class=Response)
async def metrics(service_metrics: MetricsDep) -> Response:
    """Prometheus metrics of this process."""
    payload, content_type = service_metrics.render()
    return Response(payload, media_type=content_type)
