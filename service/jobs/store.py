"""Where jobs live: the `JobStore` protocol and the in-process store behind it.

A job moves queued -> running -> succeeded | failed | cancelled. The store owns every state change
so that a second backend (Redis, `service.jobs.redis_store`) only has to make the same transitions
atomic: `claim` is the one place a job starts, `finish`/`fail` write a result once (a retried worker
cannot overwrite it), and `cancel` either ends a queued job at once or flags a running one for the
runner to stop between steps.

Inputs and results are bytes (plus JSON metadata) so that any store can hold them; an
`Idempotency-Key` maps to one job while that job lives (until its TTL after it ends).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class StoreUnavailable(Exception):
    """The job store cannot be reached (Redis is down): job endpoints answer 503 + Retry-After while
    synchronous endpoints go on; a worker backs off and retries."""

    def __init__(self, cause: BaseException) -> None:
        self.message = f"the job store (Redis) is unreachable: {type(cause).__name__}: {cause}"
        self.hint = (
            "jobs resume by themselves when Redis is back: retry after the Retry-After seconds; "
            "synchronous endpoints keep working meanwhile"
        )
        super().__init__(self.message)


class IdempotencyConflict(Exception):
    """The Idempotency-Key was already used for a request with a different body."""

    def __init__(self, key: str, job_id: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used for job {job_id} with a different request"
        )
        self.key, self.job_id = key, job_id


@dataclass
class JobSpec:
    """What a client asked for: the handler `kind`, JSON `params` and binary `inputs`.

    `fingerprint` identifies the request body (same key + same fingerprint = the same job).
    """

    kind: str
    params: dict[str, Any]
    inputs: dict[str, bytes]
    fingerprint: str


@dataclass
class JobResult:
    """A finished job's output: JSON `metrics` and named binary `artifacts` (e.g. "video/mp4")."""

    metrics: dict[str, Any]
    artifacts: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Job:
    id: str
    kind: str
    params: dict[str, Any]
    fingerprint: str
    idempotency_key: str | None
    created_at: float  # wall-clock seconds (epoch): shown to clients
    state: JobState = JobState.QUEUED
    progress: float = 0.0  # 0..1
    stage: str | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, plus queued/run/total
    started_at: float | None = None
    finished_at: float | None = None
    cancel_requested: bool = False
    error: dict[str, str] | None = None  # {"code", "message"} when failed
    expires_at: float | None = None  # set when the job ends: finished_at + ttl

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    def snapshot(self) -> Job:
        """A copy that later transitions do not change (what a remote store would return)."""
        return dataclasses.replace(
            self, timings=dict(self.timings), error=dict(self.error) if self.error else None
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state.value,
            "progress": round(self.progress, 4),
            "stage": self.stage,
            "cancel_requested": self.cancel_requested,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "expires_at": self.expires_at,
            "timings": {k: round(v, 6) for k, v in self.timings.items()},
            "params": self.params,
            "error": self.error,
        }


@runtime_checkable
class JobStore(Protocol):
    """Every job state change goes through here; implementations make each call atomic."""

    ttl_s: float

    async def create(self, spec: JobSpec, idempotency_key: str | None = None) -> tuple[Job, bool]:
        """A new queued job, or the live job already made with this key and body (created=False).
        Raises IdempotencyConflict when the key was used with a different body."""
        ...

    async def get(self, job_id: str) -> Job | None: ...

    async def inputs(self, job_id: str) -> dict[str, bytes] | None: ...

    async def claim(self, job_id: str) -> Job | None:
        """queued -> running; None when the job is gone, cancelled or already claimed."""
        ...

    async def progress(
        self, job_id: str, progress: float, stage: str | None, timings: dict[str, float] | None = None
    ) -> Job | None:
        """Record progress of a running job; the returned job says whether cancel was requested."""
        ...

    async def finish(self, job_id: str, result: JobResult) -> Job | None:
        """running -> succeeded with its result; a no-op on a job that already ended."""
        ...

    async def fail(self, job_id: str, code: str, message: str) -> Job | None: ...

    async def mark_cancelled(self, job_id: str) -> Job | None:
        """running -> cancelled, called by the runner once it stopped between steps."""
        ...

    async def cancel(self, job_id: str) -> Job | None:
        """Client cancel: queued -> cancelled now; running -> cancel_requested; ended -> unchanged."""
        ...

    async def result(self, job_id: str) -> JobResult | None: ...

    async def list_jobs(self, state: JobState | None = None) -> list[Job]: ...

    async def counts(self) -> dict[JobState, int]: ...

    async def purge_expired(self) -> int:
        """Forget ended jobs (and their keys, inputs, results) past their TTL; returns how many."""
        ...


def _snap(job: Job | None) -> Job | None:
    return None if job is None else job.snapshot()


class InProcessJobStore:
    """Jobs in this process's memory: the default, for one API process (`lawm serve`).

    One asyncio lock makes every transition atomic with respect to other coroutines; the
    store is used from the event loop only. Callers get snapshots, never the live records.
    Ended jobs are forgotten `ttl_s` after they end (purged lazily on every call), together
    with their idempotency key.
    """

    def __init__(self, ttl_s: float = 3600.0, clock: Callable[[], float] = time.time) -> None:
        if ttl_s <= 0:
            raise ValueError(f"job_ttl_s must be > 0 seconds, got {ttl_s}; set LAWM_JOB_TTL_S to e.g. 3600")
        self.ttl_s = ttl_s
        self._clock = clock
        self._jobs: dict[str, Job] = {}
        self._inputs: dict[str, dict[str, bytes]] = {}
        self._results: dict[str, JobResult] = {}
        self._keys: dict[str, str] = {}  # idempotency key -> job id
        self._lock = asyncio.Lock()

    # -- helpers (call with the lock held)
    def _live(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is not None and job.expires_at is not None and job.expires_at <= self._clock():
            self._forget(job)
            return None
        return job

    def _forget(self, job: Job) -> None:
        self._jobs.pop(job.id, None)
        self._inputs.pop(job.id, None)
        self._results.pop(job.id, None)
        if job.idempotency_key is not None and self._keys.get(job.idempotency_key) == job.id:
            del self._keys[job.idempotency_key]

    def _end(self, job: Job, state: JobState) -> None:
        now = self._clock()
        job.state, job.finished_at, job.expires_at = state, now, now + self.ttl_s
        if job.started_at is not None:
            job.timings["run_s"] = now - job.started_at
        job.timings["total_s"] = now - job.created_at
        self._inputs.pop(job.id, None)  # inputs are only needed until the job ends

    # -- protocol
    async def create(self, spec: JobSpec, idempotency_key: str | None = None) -> tuple[Job, bool]:
        async with self._lock:
            if idempotency_key is not None and (known := self._keys.get(idempotency_key)) is not None:
                job = self._live(known)
                if job is not None:
                    if job.fingerprint != spec.fingerprint:
                        raise IdempotencyConflict(idempotency_key, job.id)
                    return job.snapshot(), False
            job = Job(
                id=uuid.uuid4().hex,
                kind=spec.kind,
                params=spec.params,
                fingerprint=spec.fingerprint,
                idempotency_key=idempotency_key,
                created_at=self._clock(),
            )
            self._jobs[job.id] = job
            self._inputs[job.id] = spec.inputs
            if idempotency_key is not None:
                self._keys[idempotency_key] = job.id
            return job.snapshot(), True

    async def get(self, job_id: str) -> Job | None:
        async with self._lock:
            return _snap(self._live(job_id))

    async def inputs(self, job_id: str) -> dict[str, bytes] | None:
        async with self._lock:
            return self._inputs.get(job_id) if self._live(job_id) is not None else None

    async def claim(self, job_id: str) -> Job | None:
        async with self._lock:
            job = self._live(job_id)
            if job is None or job.state is not JobState.QUEUED:
                return None
            job.state, job.started_at = JobState.RUNNING, self._clock()
            job.timings["queued_s"] = job.started_at - job.created_at
            return _snap(job)

    async def progress(
        self, job_id: str, progress: float, stage: str | None, timings: dict[str, float] | None = None
    ) -> Job | None:
        async with self._lock:
            job = self._live(job_id)
            if job is None or job.state is not JobState.RUNNING:
                return _snap(job)
            job.progress = min(max(progress, job.progress), 1.0)  # never goes backwards
            job.stage = stage
            if timings:
                job.timings.update(timings)
            return _snap(job)

    async def finish(self, job_id: str, result: JobResult) -> Job | None:
        async with self._lock:
            job = self._live(job_id)
            if job is None or job.done:
                return _snap(job)
            self._results[job.id] = result
            job.progress, job.stage = 1.0, None
            self._end(job, JobState.SUCCEEDED)
            return _snap(job)

    async def fail(self, job_id: str, code: str, message: str) -> Job | None:
        async with self._lock:
            job = self._live(job_id)
            if job is None or job.done:
                return _snap(job)
            job.error = {"code": code, "message": message}
            self._end(job, JobState.FAILED)
            return _snap(job)

    async def mark_cancelled(self, job_id: str) -> Job | None:
        async with self._lock:
            job = self._live(job_id)
            if job is None or job.done:
                return _snap(job)
            job.cancel_requested = True
            self._end(job, JobState.CANCELLED)
            return _snap(job)

    async def cancel(self, job_id: str) -> Job | None:
        async with self._lock:
            job = self._live(job_id)
            if job is None or job.done:
                return _snap(job)
            job.cancel_requested = True
            if job.state is JobState.QUEUED:
                self._end(job, JobState.CANCELLED)
            return _snap(job)

    async def result(self, job_id: str) -> JobResult | None:
        async with self._lock:
            return self._results.get(job_id) if self._live(job_id) is not None else None

    async def list_jobs(self, state: JobState | None = None) -> list[Job]:
        async with self._lock:
            self._purge()
            jobs = [j for j in self._jobs.values() if state is None or j.state is state]
            return [j.snapshot() for j in sorted(jobs, key=lambda j: j.created_at)]

    async def counts(self) -> dict[JobState, int]:
        async with self._lock:
            self._purge()
            counts = dict.fromkeys(JobState, 0)
            for job in self._jobs.values():
                counts[job.state] += 1
            return counts

    async def purge_expired(self) -> int:
        async with self._lock:
            return self._purge()

    def _purge(self) -> int:
        now = self._clock()
        expired = [j for j in self._jobs.values() if j.expires_at is not None and j.expires_at <= now]
        for job in expired:
            self._forget(job)
        return len(expired)
