"""InProcessJobStore: transitions, idempotency keys, cancellation, TTL — as plain coroutines."""

from __future__ import annotations

import asyncio

import pytest

from service.jobs.store import IdempotencyConflict, InProcessJobStore, JobResult, JobSpec, JobState, JobStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spec(fingerprint: str = "f1") -> JobSpec:
    return JobSpec(
        kind="transfer", params={"steps": 2}, inputs={"a": b"A", "b": b"B"}, fingerprint=fingerprint
    )


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


def test_in_process_store_satisfies_the_protocol() -> None:
    assert isinstance(InProcessJobStore(), JobStore)


def test_lifecycle_queued_running_succeeded_with_timings() -> None:
    async def go() -> None:
        clock = Clock()
        store = InProcessJobStore(ttl_s=60, clock=clock)
        job, created = await store.create(spec())
        assert created and job.state is JobState.QUEUED and job.progress == 0
        assert await store.inputs(job.id) == {"a": b"A", "b": b"B"}
        clock.now += 2
        running = await store.claim(job.id)
        assert running is not None and running.state is JobState.RUNNING
        assert running.timings["queued_s"] == pytest.approx(2)
        assert await store.claim(job.id) is None  # a job starts once
        await store.progress(job.id, 0.5, "rollout", {"encode_s": 0.25})
        await store.progress(job.id, 0.3, "rollout")  # progress never goes backwards
        seen = await store.get(job.id)
        assert seen is not None and seen.progress == 0.5 and seen.stage == "rollout"
        clock.now += 3
        done = await store.finish(job.id, JobResult({"psnr": 30.0}, {"video/mp4": b"mp4"}))
        assert done is not None and done.state is JobState.SUCCEEDED and done.progress == 1.0
        assert done.timings["run_s"] == pytest.approx(3) and done.timings["total_s"] == pytest.approx(5)
        assert done.timings["encode_s"] == 0.25
        assert done.expires_at == pytest.approx(clock.now + 60)
        result = await store.result(job.id)
        assert result is not None and result.artifacts["video/mp4"] == b"mp4"
        assert await store.inputs(job.id) is None  # inputs are dropped once the job ended
        # a second finish or fail of an ended job changes nothing (a retried worker cannot overwrite)
        await store.fail(job.id, "internal", "late")
        again = await store.get(job.id)
        assert again is not None and again.state is JobState.SUCCEEDED and again.error is None

    run(go())


def test_idempotency_key_same_body_same_job_different_body_conflict() -> None:
    async def go() -> None:
        store = InProcessJobStore()
        first, created = await store.create(spec("body-1"), idempotency_key="k1")
        second, created_again = await store.create(spec("body-1"), idempotency_key="k1")
        assert created and not created_again and second.id == first.id
        with pytest.raises(IdempotencyConflict, match="k1"):
            await store.create(spec("body-2"), idempotency_key="k1")
        other, created_other = await store.create(spec("body-1"), idempotency_key="k2")
        assert created_other and other.id != first.id
        assert len(await store.list_jobs()) == 2

    run(go())


def test_concurrent_creates_with_one_key_make_one_job() -> None:
    async def go() -> None:
        store = InProcessJobStore()
        results = await asyncio.gather(*(store.create(spec(), idempotency_key="same") for _ in range(20)))
        assert len({job.id for job, _ in results}) == 1
        assert sum(created for _, created in results) == 1

    run(go())


def test_cancel_queued_ends_at_once_running_is_flagged() -> None:
    async def go() -> None:
        store = InProcessJobStore()
        queued, _ = await store.create(spec("q"))
        cancelled = await store.cancel(queued.id)
        assert cancelled is not None and cancelled.state is JobState.CANCELLED
        assert await store.claim(queued.id) is None  # a cancelled job never starts

        running, _ = await store.create(spec("r"))
        await store.claim(running.id)
        flagged = await store.cancel(running.id)
        assert flagged is not None and flagged.state is JobState.RUNNING and flagged.cancel_requested
        # the runner sees the flag at its next step, then ends the job
        seen = await store.progress(running.id, 0.4, "rollout")
        assert seen is not None and seen.cancel_requested
        ended = await store.mark_cancelled(running.id)
        assert ended is not None and ended.state is JobState.CANCELLED
        counts = await store.counts()
        assert counts[JobState.CANCELLED] == 2 and counts[JobState.RUNNING] == 0

    run(go())


def test_ttl_forgets_ended_jobs_and_frees_their_key() -> None:
    async def go() -> None:
        clock = Clock()
        store = InProcessJobStore(ttl_s=10, clock=clock)
        job, _ = await store.create(spec(), idempotency_key="k")
        live, _ = await store.create(spec("other"))
        await store.claim(job.id)
        await store.finish(job.id, JobResult({}))
        clock.now += 9.9
        assert await store.get(job.id) is not None
        clock.now += 0.2
        assert await store.get(job.id) is None and await store.result(job.id) is None
        assert await store.get(live.id) is not None  # unfinished jobs do not expire
        again, created = await store.create(spec("new body"), idempotency_key="k")
        assert created and again.id != job.id
        assert await store.purge_expired() == 0

    run(go())


def test_list_by_state_and_bad_ttl() -> None:
    async def go() -> None:
        store = InProcessJobStore()
        a, _ = await store.create(spec("a"))
        b, _ = await store.create(spec("b"))
        await store.claim(b.id)
        assert [j.id for j in await store.list_jobs(JobState.QUEUED)] == [a.id]
        assert [j.id for j in await store.list_jobs(JobState.RUNNING)] == [b.id]

    run(go())
    with pytest.raises(ValueError, match="LAWM_JOB_TTL_S"):
        InProcessJobStore(ttl_s=0)
