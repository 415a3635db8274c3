"""Runs jobs as asyncio tasks: bounded concurrency, cancellation between steps, drain on shutdown.

`submit(job_id)` starts one task per job that waits for one of `concurrency` slots (FIFO), claims
the job in the store (queued -> running) and awaits its handler. A handler reports each step
through `JobContext.step`, which records progress and per-stage timings and raises `JobCancelled`
once a cancel was requested, so a cancel reaches a running job at its next step even when the
request to cancel went to another process (the store carries the flag). In this process the
runner also cancels the job's task, which withdraws its queued engine calls at once.

`execute(job_id)` is the whole life of one job and is what a separate worker process
(`service.jobs.worker`) calls for each job it takes from its queue.

`JobService` is what the job routes and the app's lifespan use of a runner: this `JobRunner`, or
the Redis `RemoteJobRunner` whose jobs the workers run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from service.jobs.store import InProcessJobStore, Job, JobResult, JobState, JobStore

log = logging.getLogger("lawm.jobs")

Handler = Callable[["JobContext", dict[str, Any], dict[str, bytes]], Awaitable[JobResult]]
StateHook = Callable[[str | None, str], None]  # (old, new) per transition: ServiceMetrics.job_transition


SHUTDOWN_MESSAGE = "the server shut down before the job finished; submit it again"


class JobCancelled(Exception):
    """Raised inside a handler at the first step after a cancel was requested."""


class JobError(Exception):
    """A handler's known failure: `code` and `message` are shown to the client as they are."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class RunnerClosed(Exception):
    """The runner is draining for shutdown and takes no new jobs."""


class JobContext:
    """What a handler sees of its job: the id, and `step()` to report progress and honour cancels."""

    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store, self.job_id = store, job_id
        self._stage: str | None = None
        self._stage_started = time.monotonic()
        self.timings: dict[str, float] = {}

    async def step(self, stage: str | None, progress: float) -> None:
        """Close the previous stage's timing, start `stage` at `progress` (0..1); raise if cancelled."""
        now = time.monotonic()
        if self._stage is not None:
            key = f"{self._stage}_s"
            self.timings[key] = self.timings.get(key, 0.0) + now - self._stage_started
        self._stage, self._stage_started = stage, now
        job = await self.store.progress(self.job_id, progress, stage, dict(self.timings))
        if job is None or job.cancel_requested or job.state is not JobState.RUNNING:
            raise JobCancelled(self.job_id)

    def close_stage(self) -> dict[str, float]:
        """End the last stage's timing; returns all stage timings."""
        if self._stage is not None:
            key = f"{self._stage}_s"
            self.timings[key] = self.timings.get(key, 0.0) + time.monotonic() - self._stage_started
            self._stage = None
        return dict(self.timings)


class JobService(Protocol):
    """A runner as the job routes and the app's lifespan see it."""

    store: JobStore
    closing: bool  # draining for shutdown: no new jobs

    async def start(self) -> None:
        """Background work of its own, started by the lifespan once the model is loaded."""

    def submit(self, job: Job) -> None:
        """Run (or enqueue) a job the store just created; raises RunnerClosed while draining."""

    async def cancel(self, job_id: str) -> Job | None: ...

    async def drain(self, timeout_s: float) -> int:
        """Stop intake and finish what it can within `timeout_s`; returns the jobs left unfinished."""
        ...

    async def dependency(self) -> dict[str, Any] | None:
        """What `/readyz` reports about the store (Redis), or None when there is nothing to report."""
        ...


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        handlers: Mapping[str, Handler],
        concurrency: int = 1,
        on_state: StateHook | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"job concurrency must be >= 1, got {concurrency}")
        self.store, self.handlers, self.concurrency = store, dict(handlers), concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: dict[str, asyncio.Task[None]] = {}  # job id -> task, queued or running here
        self._on_state = on_state or (lambda old, new: None)
        self.closing = False
        self.mean_run_s: float | None = None  # recent seconds per job run here (Retry-After of a full queue)

    @property
    def active(self) -> int:
        """Jobs of this process not yet ended (waiting for a slot or running)."""
        return len(self._tasks)

    async def start(self) -> None:
        """Nothing to start: a job's task starts when it is submitted."""

    async def dependency(self) -> dict[str, Any] | None:
        """The in-process store has no dependency to report."""
        return None

    def submit(self, job: Job) -> None:
        """Schedule a queued job (created by the store); raises RunnerClosed while draining."""
        if self.closing:
            raise RunnerClosed("the server is shutting down and takes no new jobs")
        if job.kind not in self.handlers:
            raise ValueError(f"no handler for job kind {job.kind!r}; known: {sorted(self.handlers)}")
        if job.id in self._tasks or job.done:
            return
        self._on_state(None, JobState.QUEUED)
        task = asyncio.create_task(self._slot_then_execute(job.id), name=f"job-{job.id}")
        self._tasks[job.id] = task
        task.add_done_callback(lambda _t, job_id=job.id: self._tasks.pop(job_id, None))

    async def cancel(self, job_id: str) -> Job | None:
        """Client cancel: the store ends a queued job or flags a running one; our task stops now."""
        before = await self.store.get(job_id)
        job = await self.store.cancel(job_id)
        if job is None:
            return None
        task = self._tasks.get(job_id)
        if task is not None and not task.done():
            task.cancel()
        if before is not None and before.state is JobState.QUEUED and job.state is JobState.CANCELLED:
            self._on_state(
                JobState.QUEUED, JobState.CANCELLED
            )  # a running job ends (and counts) in execute()
        return job

    async def _slot_then_execute(self, job_id: str) -> None:
        async with self._slots:
            await self.execute(job_id)

    async def execute(self, job_id: str) -> Job | None:
        """Claim and run one job to its end; every outcome is written to the store."""
        job = await self.store.claim(job_id)
        if job is None:  # cancelled while queued, or claimed elsewhere
            return await self.store.get(job_id)
        self._on_state(JobState.QUEUED, JobState.RUNNING)
        inputs = await self.store.inputs(job_id) or {}
        ctx = JobContext(self.store, job_id)
        started = time.monotonic()
        try:
            result = await self.handlers[job.kind](ctx, job.params, inputs)
            took = time.monotonic() - started
            self.mean_run_s = took if self.mean_run_s is None else 0.7 * self.mean_run_s + 0.3 * took
        except (JobCancelled, asyncio.CancelledError) as e:
            return await self._stopped(job_id, ctx, e)
        except JobError as e:
            return await self._ended(job_id, JobState.FAILED, e.code, e.message)
        except Exception as e:  # a bug, not the client's fault: log it, keep the details out of the job
            log.exception("job %s (%s) failed", job_id, job.kind)
            message = f"the job failed unexpectedly ({type(e).__name__}); see the server log"
            return await self._ended(job_id, JobState.FAILED, "internal", message)
        await self.store.progress(job_id, 1.0, None, ctx.close_stage())
        ended = await self.store.finish(job_id, result)
        if ended is not None and ended.state is JobState.SUCCEEDED:
            self._on_state(JobState.RUNNING, JobState.SUCCEEDED)
        return ended

    async def _stopped(self, job_id: str, ctx: JobContext, stop: BaseException) -> Job | None:
        """A handler stopped by a client's cancel (-> cancelled) or by the runner's teardown (-> failed)."""
        await self.store.progress(job_id, 0.0, None, ctx.close_stage())
        current = await self.store.get(job_id)
        task = asyncio.current_task()
        if isinstance(stop, JobCancelled) or (current is not None and current.cancel_requested):
            if isinstance(stop, asyncio.CancelledError) and task is not None:
                task.uncancel()  # the cancel was for this job, and it is handled here
            return await self._ended(job_id, JobState.CANCELLED, "cancelled", "")
        await self._ended(job_id, JobState.FAILED, "shutdown", SHUTDOWN_MESSAGE)
        log.warning("job %s failed: %s", job_id, SHUTDOWN_MESSAGE)
        raise stop

    async def _ended(
        self, job_id: str, state: JobState, code: str, message: str, old: JobState = JobState.RUNNING
    ) -> Job | None:
        before = await self.store.get(job_id)
        if before is None or before.done:
            return before
        if state is JobState.CANCELLED:
            job = await self.store.mark_cancelled(job_id)
        else:
            job = await self.store.fail(job_id, code, message)
        if job is not None and job.state is state:
            self._on_state(old, state)
        return job

    async def drain(self, timeout_s: float) -> int:
        """Stop intake, let queued and running jobs finish for up to `timeout_s`, then stop the rest.

        Jobs stopped by the timeout are failed with code "shutdown" (the client submits them again).
        Returns how many jobs were stopped that way."""
        self.closing = True
        pending = list(self._tasks.items())
        still: set[asyncio.Task[None]] = set()
        if pending:
            _done, still = await asyncio.wait([t for _, t in pending], timeout=max(timeout_s, 0.0))
        for task in still:
            task.cancel()
        for task in still:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for job_id, task in pending:  # a task stopped before it claimed its job: fail the job too
            if task in still:
                job = await self.store.get(job_id)
                if job is not None and not job.done:
                    await self._ended(job_id, JobState.FAILED, "shutdown", SHUTDOWN_MESSAGE, old=job.state)
                    log.warning("job %s failed: %s", job_id, SHUTDOWN_MESSAGE)
        # An in-process store's jobs live and die with this process: every one still unfinished was
        # accepted here and will never run. Record it (GET /v1/jobs/{id} says why while the process
        # lives) and log it. (A shared store's jobs belong to other processes too: not swept.)
        local = isinstance(self.store, InProcessJobStore)
        for job in await self.store.list_jobs() if local else []:
            if not job.done:
                await self._ended(job.id, JobState.FAILED, "shutdown", SHUTDOWN_MESSAGE, old=job.state)
                log.warning("job %s failed: %s", job.id, SHUTDOWN_MESSAGE)
        return len(still)
