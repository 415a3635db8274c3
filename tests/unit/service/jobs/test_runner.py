"""JobRunner: bounded concurrency, cancellation (queued and running), failures, drain on shutdown.

The handlers here wait on events the test controls, so every interleaving is decided by the test,
not by timing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.jobs.runner import JobContext, JobError, JobRunner, RunnerClosed
from service.jobs.store import InProcessJobStore, JobResult, JobSpec, JobState


def spec(n: int) -> JobSpec:
    return JobSpec(kind="steps", params={"n": n}, inputs={}, fingerprint=str(n))


class Gated:
    """A handler of `n` steps; each step waits until the test opens its gate."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started: list[str] = []
        self.running = 0
        self.peak = 0

    async def __call__(self, ctx: JobContext, params: dict[str, Any], inputs: dict[str, bytes]) -> JobResult:
        self.started.append(ctx.job_id)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            for i in range(params["n"]):
                await ctx.step(f"step{i}", i / params["n"])
                await self.gate.wait()
            return JobResult({"steps": params["n"]})
        finally:
            self.running -= 1


async def until(predicate, limit: int = 1000) -> None:  # noqa: ANN001
    for _ in range(limit):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


def test_jobs_run_to_success_with_bounded_concurrency_and_state_counts() -> None:
    async def go() -> None:
        store, handler = InProcessJobStore(), Gated()
        transitions: list[tuple[str | None, str]] = []
        runner = JobRunner(
            store, {"steps": handler}, concurrency=2, on_state=lambda o, n: transitions.append((o, n))
        )
        jobs = [(await store.create(spec(3)))[0] for _ in range(5)]
        for job in jobs:
            runner.submit(job)
        await until(lambda: len(handler.started) == 2)
        for _ in range(20):
            await asyncio.sleep(0)
        assert handler.peak == 2 and len(handler.started) == 2  # the other three wait for a slot
        assert (await store.get(jobs[4].id)).state is JobState.QUEUED
        handler.gate.set()
        await until(lambda: runner.active == 0)
        for job in jobs:
            done = await store.get(job.id)
            assert done.state is JobState.SUCCEEDED and done.progress == 1.0
            assert {"step0_s", "step1_s", "step2_s", "queued_s", "run_s"} <= set(done.timings)
        assert handler.started == [j.id for j in jobs]  # FIFO
        assert transitions.count((None, "queued")) == 5 and transitions.count(("running", "succeeded")) == 5

    asyncio.run(go())


def test_cancel_a_running_job_between_steps_and_a_queued_one_before_it_starts() -> None:
    async def go() -> None:
        store, handler = InProcessJobStore(), Gated()
        runner = JobRunner(store, {"steps": handler}, concurrency=1)
        running, _ = await store.create(spec(100))
        queued, _ = await store.create(spec(100))
        runner.submit(running)
        runner.submit(queued)
        await until(lambda: handler.running == 1)
        job = await runner.cancel(queued.id)
        assert job.state is JobState.CANCELLED
        job = await runner.cancel(running.id)
        assert job.cancel_requested
        await until(lambda: runner.active == 0)
        ended = await store.get(running.id)
        assert ended.state is JobState.CANCELLED and ended.progress < 1
        assert queued.id not in handler.started  # never ran

    asyncio.run(go())


def test_cancel_flag_from_elsewhere_reaches_the_running_job_at_its_next_step() -> None:
    """A cancel written to the store by another process (no task to cancel here) stops the job too."""

    async def go() -> None:
        store, handler = InProcessJobStore(), Gated()
        runner = JobRunner(store, {"steps": handler})
        job, _ = await store.create(spec(5))
        runner.submit(job)
        await until(lambda: handler.running == 1)
        await store.cancel(job.id)  # only the flag, as a Redis-backed API replica would do
        handler.gate.set()
        await until(lambda: runner.active == 0)
        assert (await store.get(job.id)).state is JobState.CANCELLED

    asyncio.run(go())


def test_known_and_unexpected_failures() -> None:
    async def known(ctx: JobContext, params: dict[str, Any], inputs: dict[str, bytes]) -> JobResult:
        raise JobError("clip_too_short", "clip A has 2 frames")

    async def bug(ctx: JobContext, params: dict[str, Any], inputs: dict[str, bytes]) -> JobResult:
        raise KeyError("secret detail")

    async def go() -> None:
        store = InProcessJobStore()
        runner = JobRunner(store, {"known": known, "bug": bug})
        a, _ = await store.create(JobSpec("known", {}, {}, "a"))
        b, _ = await store.create(JobSpec("bug", {}, {}, "b"))
        runner.submit(a)
        runner.submit(b)
        await until(lambda: runner.active == 0)
        assert (await store.get(a.id)).error == {"code": "clip_too_short", "message": "clip A has 2 frames"}
        failed = await store.get(b.id)
        assert failed.state is JobState.FAILED and failed.error["code"] == "internal"
        assert "secret detail" not in failed.error["message"]

    asyncio.run(go())


@pytest.mark.parametrize("timeout_s", [0.0, 30.0])
def test_drain_finishes_or_fails_pending_jobs_and_refuses_new_ones(timeout_s: float) -> None:
    async def go() -> None:
        store, handler = InProcessJobStore(), Gated()
        runner = JobRunner(store, {"steps": handler}, concurrency=1)
        jobs = [(await store.create(spec(2)))[0] for _ in range(2)]
        for job in jobs:
            runner.submit(job)
        await until(lambda: handler.running == 1)
        if timeout_s:
            handler.gate.set()  # work can finish within the drain timeout
        stopped = await runner.drain(timeout_s)
        states = [(await store.get(j.id)).state for j in jobs]
        if timeout_s:
            assert stopped == 0 and states == [JobState.SUCCEEDED] * 2
        else:
            assert stopped == 2 and states == [JobState.FAILED] * 2
            assert {(await store.get(j.id)).error["code"] for j in jobs} == {"shutdown"}
        late, _ = await store.create(spec(1))
        with pytest.raises(RunnerClosed, match="shutting down"):
            runner.submit(late)

    asyncio.run(go())


def test_shutdown_records_and_logs_every_accepted_job(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        store, handler = InProcessJobStore(), Gated()
        runner = JobRunner(store, {"steps": handler}, concurrency=1)
        running, queued = [(await store.create(spec(2)))[0] for _ in range(2)]
        runner.submit(running)
        runner.submit(queued)
        orphan, _ = await store.create(spec(1))  # accepted (in the store) but never handed to the runner
        await until(lambda: handler.running == 1)
        with caplog.at_level("WARNING", logger="lawm.jobs"):
            await runner.drain(0.0)
        for job in (running, queued, orphan):
            after = await store.get(job.id)  # what GET /v1/jobs/{id} answers while the process lives
            assert after.state is JobState.FAILED
            assert after.error["code"] == "shutdown" and "shut down" in after.error["message"]
            assert any(job.id in r.getMessage() and "shut down" in r.getMessage() for r in caplog.records)

    asyncio.run(go())


def test_the_mean_run_time_is_measured() -> None:
    async def go() -> None:
        store, handler = InProcessJobStore(), Gated()
        handler.gate.set()
        runner = JobRunner(store, {"steps": handler})
        assert runner.mean_run_s is None
        job, _ = await store.create(spec(1))
        await runner.execute(job.id)
        assert runner.mean_run_s is not None and runner.mean_run_s >= 0

    asyncio.run(go())
