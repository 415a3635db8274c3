"""Long jobs (transfers): a store, a runner, and the transfer pipeline.

`build_job_runner` wires them for the app's lifespan:

    runner = build_job_runner(settings, engine, metrics)   # app.state.jobs
    ...
    await runner.drain(settings.drain_timeout_s)           # on shutdown, after readiness is off
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.jobs.runner import JobRunner
from service.jobs.store import InProcessJobStore, JobStore

if TYPE_CHECKING:
    from service.inference.engine import Engine
    from service.metrics import ServiceMetrics

__all__ = ["JobRunner", "JobStore", "build_job_runner"]


def build_job_runner(
    settings: Any,
    engine: Engine,
    metrics: ServiceMetrics | None = None,
    store: JobStore | None = None,
    concurrency: int = 1,
) -> JobRunner:
    """With `settings.redis_url`: a `RemoteJobRunner` that enqueues on Redis for `lawm worker`s.
    Otherwise the in-process store (or `store`) and a runner whose "transfer" handler runs through `engine`
    at render priority. One job at a time by default: a render already fills the batchers, and
    interactive calls and robot plans go first anyway."""
    from service.jobs.transfer import KIND, transfer_handler
    from service.media import encode_mp4

    if store is None and getattr(settings, "redis_url", None):  # scale-out: `lawm worker`s run the jobs
        from service.jobs.redis_store import RedisJobStore
        from service.jobs.remote import RemoteJobRunner

        return RemoteJobRunner(RedisJobStore.from_settings(settings), metrics, settings.worker_heartbeat_s)  # type: ignore[return-value]
    store = store if store is not None else InProcessJobStore(ttl_s=settings.job_ttl_s)
    hook = metrics.job_transition if metrics is not None else None
    return JobRunner(
        store, {KIND: transfer_handler(engine, encode_mp4)}, concurrency=concurrency, on_state=hook
    )
