"""`lawm worker`: runs the jobs API replicas put on Redis (`LAWM_REDIS_URL`), many workers side by side.

A `Worker` is one consumer of the job stream's consumer group. It reads up to `concurrency` entries,
runs each through the same `JobRunner.execute` and handlers as `lawm serve` does in-process, and
acknowledges an entry only once its job has ended, so a worker that dies leaves its entries pending.
Every heartbeat it renews the entries it runs (so nobody takes them over), publishes that it is
alive, and cancels jobs whose cancel was requested through any replica. Every half visibility
timeout it takes over entries another worker left idle (XAUTOCLAIM): such a job is requeued, or
failed and dead-lettered once it has been started `max_attempts` times.

SIGTERM: stop reading, let running jobs finish within `drain_timeout_s`, then hand the rest back to
the queue at once (requeued, not failed) and leave the group. A Redis outage pauses the worker
(backing off) and it resumes by itself; a job whose store calls fail mid-run is not failed but left
pending, to be run again.

`create_worker_app(settings)` wraps it as a small ASGI app (`/livez`, `/readyz`, `/metrics`) whose
lifespan loads and warms the model like `lawm serve`, so probes and Prometheus see workers too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from service.jobs.redis_store import Entry, RedisJobStore
from service.jobs.runner import Handler, JobContext, JobRunner
from service.jobs.store import JobResult, JobState, StoreUnavailable

if TYPE_CHECKING:
    from service.metrics import ServiceMetrics
    from service.settings import Settings

log = logging.getLogger("lawm.worker")

BLOCK_MS = 1000  # longest wait of one read for new entries (bounds how late a stop is noticed)
MAX_BACKOFF_S = 5.0


class JobReleased(BaseException):  # noqa: N818
    """The worker is shutting down: hand the job back instead of failing it. A BaseException, so that
    it passes the runner's `except Exception` (which would fail the job) untouched."""


class StoreLost(BaseException):  # noqa: N818
    """Redis failed mid-job: leave the entry pending (run again later) rather than fail the job."""


class Worker:
    def __init__(
        self,
        store: RedisJobStore,
        handlers: Mapping[str, Handler],
        concurrency: int = 1,
        heartbeat_s: float = 5.0,
        visibility_timeout_s: float = 60.0,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"worker_concurrency must be >= 1, got {concurrency} (LAWM_WORKER_CONCURRENCY)")
        if visibility_timeout_s < 2 * heartbeat_s:
            raise ValueError(
                f"job_visibility_timeout_s ({visibility_timeout_s}) must be at least twice worker_heartbeat_s "
                f"({heartbeat_s}): the worker renews its claims every heartbeat"
            )
        self.store, self.concurrency = store, concurrency
        self.heartbeat_s, self.visibility_timeout_s = heartbeat_s, visibility_timeout_s
        self.metrics = metrics
        hook = (lambda old, new: metrics.jobs_total.labels(state=new).inc()) if metrics is not None else None
        self.runner = JobRunner(store, {k: self._guard(h) for k, h in handlers.items()}, on_state=hook)
        self.active: dict[str, tuple[Entry, asyncio.Task[None]]] = {}  # job id -> its entry and task
        self.releasing = False
        self.stopping = asyncio.Event()
        self.consuming = False
        self.redis_ok: bool | None = None
        self.counts = dict.fromkeys(("done", "released", "left_pending", "reclaimed", "dead_lettered"), 0)
        self._changed = asyncio.Event()
        self._next_reclaim = 0.0
        self._run_task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.store.consumer

    def _guard(self, handler: Handler) -> Handler:
        async def run(ctx: JobContext, params: dict[str, Any], inputs: dict[str, bytes]) -> JobResult:
            try:
                return await handler(ctx, params, inputs)
            except StoreUnavailable as e:
                raise StoreLost(str(e)) from e
            except asyncio.CancelledError:
                if self.releasing:
                    raise JobReleased() from None
                raise  # a client's cancel: the runner ends the job as cancelled

        return run

    # ------------------------------------------------------------------ main loop
    async def run(self) -> None:
        """Consume until `stop()`; never raises for a Redis outage."""
        self._run_task = asyncio.current_task()
        await self._until_redis(self.store.ensure_group)
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name="worker-heartbeat")
        self.consuming = True
        log.info("worker %s consuming %s (concurrency %d)", self.name, self.store.stream, self.concurrency)
        backoff = 0.1
        try:
            while not self.stopping.is_set():
                free = self.concurrency - len(self.active)
                if free <= 0:
                    await self._wait_change()
                    continue
                try:
                    entries = await self._take_over(free)
                    if not entries:
                        entries = await self.store.read(free, BLOCK_MS)
                    self._up()
                    backoff = 0.1
                except StoreUnavailable as e:
                    self._down(e)
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                    continue
                for entry in entries:
                    if entry.job_id in self.active:  # our own entry, reclaimed after a lost renewal
                        continue
                    if self.stopping.is_set():  # read while stop() was called: the next worker's
                        await self._release(entry)
                        continue
                    self._start(entry)
        finally:
            self.consuming = False
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def stop(self, timeout_s: float) -> int:
        """Stop reading; wait up to `timeout_s` for running jobs, then hand the rest back to the queue.
        Returns how many were handed back."""
        self.stopping.set()
        self._changed.set()
        tasks = [task for _, task in self.active.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=max(timeout_s, 0.0))
        still = [task for _, task in self.active.values() if not task.done()]
        self.releasing = True
        for task in still:
            task.cancel()
        for task in still:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._run_task is not None and self._run_task is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError):
                await self._run_task  # returns within one read (BLOCK_MS) of `stopping`
        with contextlib.suppress(StoreUnavailable):
            await self.store.leave()
        return len(still)

    # ------------------------------------------------------------------ one entry
    def _start(self, entry: Entry) -> None:
        task = asyncio.create_task(self._process(entry), name=f"job-{entry.job_id}")
        self.active[entry.job_id] = (entry, task)

        def done(_: asyncio.Task[None]) -> None:
            self.active.pop(entry.job_id, None)
            self._changed.set()

        task.add_done_callback(done)

    async def _process(self, entry: Entry) -> None:
        try:
            job = await self.runner.execute(entry.job_id)
        except (JobReleased, asyncio.CancelledError) as e:
            if not self.releasing:
                raise
            task = asyncio.current_task()
            if isinstance(e, asyncio.CancelledError) and task is not None:
                task.uncancel()  # the cancel was the shutdown's, handled here by releasing the job
            await self._release(entry)
            return
        except (StoreLost, StoreUnavailable) as e:
            log.warning("job %s: the job store failed mid-run (%s); it stays queued and runs again", entry.job_id, e)
            self.counts["left_pending"] += 1
            return
        except Exception:  # a bug in the plumbing, not the job's: leave it pending for a retry (capped)
            log.exception("job %s: unexpected error; it stays queued and runs again", entry.job_id)
            self.counts["left_pending"] += 1
            return
        if job is not None and not job.done:
            self.counts["left_pending"] += 1  # claimed elsewhere: its owner acknowledges it
            return
        try:
            await self.store.ack(entry.entry_id)
            self.counts["done"] += 1
        except StoreUnavailable:  # the job has ended: a later reclaim finds it done and acknowledges it
            self.counts["left_pending"] += 1

    async def _release(self, entry: Entry) -> None:
        try:
            outcome = await self.store.release(entry)
            if outcome not in ("done", "not_ours"):
                self.counts["released"] += 1
                log.info("job %s handed back to the queue (%s)", entry.job_id, outcome)
        except StoreUnavailable:
            self.counts["left_pending"] += 1  # reclaimed by another worker after the visibility timeout

    async def _take_over(self, free: int) -> list[Entry]:
        """Entries of dead workers, every half visibility timeout: requeued, or dead-lettered."""
        now = time.monotonic()
        if now < self._next_reclaim:
            return []
        self._next_reclaim = now + self.visibility_timeout_s / 2
        runnable = []
        for entry in await self.store.autoclaim(self.visibility_timeout_s, free):
            if entry.job_id in self.active:
                continue
            outcome = await self.store.requeue(entry.job_id)
            self.counts["reclaimed"] += 1
            log.warning("job %s reclaimed from a worker that stopped renewing it: %s", entry.job_id, outcome)
            if outcome == "queued":
                runnable.append(entry)
            elif outcome == "dead":
                await self.store.dead_letter(entry, f"started {self.store.max_attempts} time(s) without finishing")
                self.counts["dead_lettered"] += 1
            else:  # done, cancelled, or expired: nothing left to run
                await self.store.ack(entry.entry_id)
        return runnable

    # ------------------------------------------------------------------ heartbeat
    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self.beat()
                self._up()
            except StoreUnavailable as e:
                self._down(e)
            except Exception:  # never let the heartbeat die silently
                log.exception("worker heartbeat failed")
            await asyncio.sleep(self.heartbeat_s)

    async def beat(self) -> None:
        """Say we are alive, keep our entries claimed, stop jobs whose cancel was requested."""
        info = {"jobs": sorted(self.active), "counts": self.counts, "at": time.time()}
        await self.store.heartbeat(info, ttl_s=3 * self.heartbeat_s)
        await self.store.renew([entry.entry_id for entry, _ in self.active.values()])
        for job_id, (_, task) in list(self.active.items()):
            job = await self.store.get(job_id)
            if job is not None and job.cancel_requested and job.state is JobState.RUNNING and not task.done():
                task.cancel()  # withdraws its queued engine calls now; the runner marks it cancelled
        if self.metrics is not None:
            for state, n in (await self.store.counts()).items():
                self.metrics.jobs.labels(state=state.value).set(n)

    # ------------------------------------------------------------------ helpers
    def _up(self) -> None:
        if self.redis_ok is False:
            log.warning("Redis is reachable again; worker %s resumes", self.name)
        self.redis_ok = True

    def _down(self, e: StoreUnavailable) -> None:
        if self.redis_ok is not False:
            log.warning("worker %s: %s; retrying", self.name, e.message)
        self.redis_ok = False

    async def _until_redis(self, op: Any) -> None:
        backoff = 0.1
        while True:
            try:
                await op()
                self._up()
                return
            except StoreUnavailable as e:
                self._down(e)
                await self._sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _wait_change(self) -> None:
        self._changed.clear()
        if self.concurrency - len(self.active) > 0 or self.stopping.is_set():
            return
        await self._changed.wait()


# ----------------------------------------------------------------------------- the worker process
def create_worker_app(settings: Settings) -> FastAPI:
    """The worker as an ASGI app: its lifespan loads and warms the model, then consumes jobs until
    shutdown; `/livez`, `/readyz` (warm and consuming, Redis reachable) and `/metrics`."""
    from fastapi.responses import JSONResponse, Response

    from service.inference.engine import Engine
    from service.jobs import job_handlers
    from service.metrics import ServiceMetrics

    if not settings.redis_url:
        raise ValueError("lawm worker takes its jobs from Redis: set LAWM_REDIS_URL (or --redis-url)")
    metrics = ServiceMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = Engine(settings, metrics)
        app.state.engine = engine
        await engine.start()  # load, verify, warm: a job never pays the first-call cost
        store = RedisJobStore.from_settings(settings, blocking_reads=True)
        worker = Worker(
            store,
            job_handlers(engine),
            concurrency=settings.worker_concurrency,
            heartbeat_s=settings.worker_heartbeat_s,
            visibility_timeout_s=settings.job_visibility_timeout_s,
            metrics=metrics,
        )
        app.state.worker = worker
        consume = asyncio.create_task(worker.run(), name="worker")
        try:
            yield
        finally:
            handed_back = await worker.stop(settings.drain_timeout_s)
            if handed_back:
                log.warning("%d job(s) handed back to the queue at shutdown", handed_back)
            await consume
            await engine.drain(settings.drain_timeout_s)
            await store.close()
            log.info("worker %s stopped: %s", worker.name, worker.counts)

    app = FastAPI(title="lawm worker", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.get("/livez")
    async def livez() -> dict[str, bool]:
        return {"live": True}

    @app.get("/readyz")
    async def readyz() -> Any:
        engine = getattr(app.state, "engine", None)
        worker: Worker | None = getattr(app.state, "worker", None)
        body = {
            "ready": bool(engine is not None and engine.ready and worker is not None and worker.consuming
                          and worker.redis_ok),
            "state": engine.state if engine is not None else "starting",
            "redis": {"ok": worker.redis_ok if worker is not None else None},
            "worker": worker.name if worker is not None else None,
            "running": sorted(worker.active) if worker is not None else [],
            "counts": worker.counts if worker is not None else {},
        }
        return body if body["ready"] else JSONResponse(body, status_code=503, headers={"Retry-After": "1"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        payload, content_type = metrics.render()
        return Response(payload, media_type=content_type)

    return app
