"""Long jobs (transfers): stores, runners, the worker, and the transfer pipeline.

`job_handlers(engine)` is the one registry of job kinds, for the API's in-process runner and for
`lawm worker` alike; `build_job_runner` wires a runner for the app's lifespan:

    runner = build_job_runner(settings, engine, metrics)   # app.state.jobs
    ...
    await runner.drain(settings.drain_timeout_s)           # on shutdown, after readiness is off
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.jobs.runner import Handler, JobRunner, JobService
from service.jobs.store import InProcessJobStore, JobStore

if TYPE_CHECKING:
    from service.inference.engine import Engine
    from service.metrics import ServiceMetrics
    from service.settings import Settings

__all__ = ["JobRunner", "JobService", "JobStore", "build_job_runner", "job_handlers"]


def job_handlers(engine: Engine) -> dict[str, Handler]:
    """Every job kind and the handler that runs it through `engine`."""
    from service.jobs.transfer import KIND, transfer_handler

    return {KIND: transfer_handler(engine)}


def build_job_runner(
    settings: Settings,
    engine: Engine,
    metrics: ServiceMetrics | None = None,
    store: JobStore | None = None,
    concurrency: int = 1,
) -> JobService:
    """With `settings.redis_url`: a `RemoteJobRunner` that enqueues on Redis for `lawm worker`s.
    Otherwise the in-process store (or `store`) and a runner whose handlers run through `engine` at
    render priority. One job at a time by default: a render already fills the batchers, and
    interactive calls and robot plans go first anyway."""
    if store is None and settings.redis_url:  # scale-out: `lawm worker`s run the jobs
        from service.jobs.redis_store import RedisJobStore
        from service.jobs.remote import RemoteJobRunner

        return RemoteJobRunner(RedisJobStore.from_settings(settings), metrics, settings.worker_heartbeat_s)
    store = store if store is not None else InProcessJobStore(ttl_s=settings.job_ttl_s)
    hook = metrics.job_transition if metrics is not None else None
    return JobRunner(store, job_handlers(engine), concurrency=concurrency, on_state=hook)
