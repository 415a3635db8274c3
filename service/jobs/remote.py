"""The API replica's side of Redis jobs: it enqueues and answers; `lawm worker` processes run the jobs.

`RemoteJobRunner` stands where the in-process `JobRunner` stands on `app.state.jobs`, so the job routes
do not change: `store.create` already put the job on the stream, `submit` only counts it, `cancel`
flags it in Redis (its worker stops at its next step), and `drain` has nothing of its own to wait
for. A background task publishes the shared job counts (`lawm_jobs{state}`), and `dependency()` is
what `/readyz` reports about Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from service.jobs.redis_store import RedisJobStore
from service.jobs.runner import RunnerClosed
from service.jobs.store import Job, JobState, StoreUnavailable

if TYPE_CHECKING:
    from service.metrics import ServiceMetrics

log = logging.getLogger("lawm.jobs")

REFRESH_S = 1.0  # how often the shared job counts and Redis' reachability are read
LIVE_WINDOW_S = 10.0  # a worker heard from this recently counts as live (a busy host delays heartbeats)


class RemoteJobRunner:
    def __init__(self, store: RedisJobStore, metrics: ServiceMetrics | None = None, heartbeat_s: float = 5.0) -> None:
        self.store = store
        self.metrics = metrics
        self.heartbeat_s = heartbeat_s
        self.closing = False
        self.active = 0  # jobs running in this process: never any
        self._task: asyncio.Task[None] | None = None
        self._status: dict[str, Any] = {"ok": None, "state": "connecting"}
        self._refreshed_at = 0.0  # monotonic time of the last refresh, reached or not

    async def start(self) -> None:
        """Create the stream's consumer group when Redis answers, and keep the job gauges current."""
        self._task = asyncio.create_task(self._refresh_loop(), name="job-counts")

    def submit(self, job: Job) -> None:
        if self.closing:
            raise RunnerClosed("the server is shutting down and takes no new jobs")
        if self.metrics is not None:  # the gauge comes from Redis (shared); the counter is this replica's
            self.metrics.jobs_total.labels(state=JobState.QUEUED.value).inc()

    async def cancel(self, job_id: str) -> Job | None:
        before = await self.store.get(job_id)
        job = await self.store.cancel(job_id)
        if (
            self.metrics is not None and before is not None and job is not None
            and before.state is JobState.QUEUED and job.state is JobState.CANCELLED
        ):
            self.metrics.jobs_total.labels(state=JobState.CANCELLED.value).inc()
        return job

    async def drain(self, timeout_s: float) -> int:
        """Stop intake; queued and running jobs belong to the workers, so nothing is lost here."""
        self.closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.store.close()
        return 0

    async def dependency(self) -> dict[str, Any]:
        """Redis as `/readyz` reports it (a probe never waits on a down Redis): reachable or not, as the
        latest command found it (a request's or the last refresh's), with the live workers and the
        queued and running jobs from the last refresh that reached it."""
        status = dict(self._status)
        outcome = self.store.last_outcome
        if outcome is not None and outcome[0] > self._refreshed_at:
            _, error = outcome
            if error is None and status.get("ok") is not True:
                status = {"ok": True, "state": "reconnected"}  # the counts follow at the next refresh
            elif error is not None:
                status = {"ok": False, "error": error}
        return status

    async def _refresh_loop(self) -> None:
        group_ready = False
        while True:
            try:
                if not group_ready:
                    await self.store.ensure_group()
                    group_ready = True
                counts = await self.store.counts()
                workers = await self.store.live_workers(max(3 * self.heartbeat_s, LIVE_WINDOW_S))
                if self.metrics is not None:
                    for state, n in counts.items():
                        self.metrics.jobs.labels(state=state.value).set(n)
                if self._status.get("ok") is False:
                    log.warning("Redis is reachable again; jobs resume")
                self._status = {
                    "ok": True, "workers": workers,
                    "queued": counts[JobState.QUEUED], "running": counts[JobState.RUNNING],
                }
            except StoreUnavailable as e:
                if self._status.get("ok") is not False:  # say it once per outage, not every refresh
                    log.warning("%s; job endpoints answer 503 until it is back", e.message)
                self._status = {"ok": False, "error": e.message}
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # drain() stops us
                    raise
                # A client-side timeout can surface as a stray CancelledError; the loop must outlive it,
                # or `/readyz` would report the outage it saw last forever.
                log.warning("a Redis call was cancelled under the job-count refresh; retrying")
            except Exception:  # never let the gauges' loop die silently
                log.exception("refreshing the job counts failed")
            self._refreshed_at = time.monotonic()
            await asyncio.sleep(REFRESH_S)
