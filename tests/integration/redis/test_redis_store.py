"""`RedisJobStore` against a real redis-server: the same transitions as the in-process store, made
atomic across processes (two stores here stand for two replicas), idempotency and unique ids,
TTLs on ended jobs, large results on a shared folder, and the queue's reclaim / dead-letter path."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from service.errors import answer_for
from service.jobs.redis_store import RedisJobStore, connect
from service.jobs.store import IdempotencyConflict, JobResult, JobSpec, JobState, JobStore, StoreUnavailable
from tests.integration.redis.conftest import store_for

pytestmark = pytest.mark.anyio


def spec(fingerprint: str = "fp-1", **params: Any) -> JobSpec:
    return JobSpec("transfer", {"steps": 3, **params}, {"a": b"\x00\x01" * 10, "b": b"bee"}, fingerprint)


@pytest.fixture
async def pair(redis_server: Any, prefix: str) -> Any:
    """Two stores with their own connections on one Redis: two API replicas, or a replica and a worker."""
    a, b = store_for(redis_server.url, prefix, ttl_s=60.0), store_for(redis_server.url, prefix, ttl_s=60.0)
    yield a, b
    await a.close()
    await b.close()


async def test_lifecycle_across_two_stores(pair: tuple[RedisJobStore, RedisJobStore]) -> None:
    api, worker = pair
    assert isinstance(api, JobStore)  # a drop-in for the in-process store behind the same routes and runner
    job, created = await api.create(spec())
    assert created and job.state is JobState.QUEUED and job.params == {"steps": 3}
    assert await worker.inputs(job.id) == {"a": b"\x00\x01" * 10, "b": b"bee"}

    running = await worker.claim(job.id)
    assert running is not None and running.state is JobState.RUNNING and "queued_s" in running.timings
    assert await api.claim(job.id) is None  # claimed once, whoever asks second
    seen = await worker.progress(job.id, 0.4, "rollout", {"encode_s": 0.25})
    assert seen is not None and (seen.progress, seen.stage, seen.timings["encode_s"]) == (0.4, "rollout", 0.25)
    assert (await worker.progress(job.id, 0.1, "rollout")).progress == 0.4  # never goes backwards

    done = await worker.finish(job.id, JobResult({"psnr": 20.5}, {"video/mp4": b"mp4-bytes"}))
    assert done is not None and done.state is JobState.SUCCEEDED and done.progress == 1.0
    assert {"queued_s", "run_s", "total_s", "encode_s"} <= set(done.timings)
    assert done.expires_at == pytest.approx(done.finished_at + 60.0)
    result = await api.result(job.id)
    assert result is not None and result.metrics == {"psnr": 20.5} and result.artifacts == {"video/mp4": b"mp4-bytes"}
    assert await api.inputs(job.id) is None  # inputs go when the job ends

    # a retried worker cannot overwrite the first result, nor fail a finished job
    again = await worker.finish(job.id, JobResult({"psnr": 0.0}, {"video/mp4": b"other"}))
    assert again is not None and again.state is JobState.SUCCEEDED
    assert (await api.result(job.id)).metrics == {"psnr": 20.5}
    assert (await worker.fail(job.id, "internal", "late")).state is JobState.SUCCEEDED


async def test_ended_jobs_expire(pair: tuple[RedisJobStore, RedisJobStore], redis_client: Any) -> None:
    api, worker = pair
    job, _ = await api.create(spec(), "key-ttl")
    assert await redis_client.pttl(api.key("job", job.id)) == -1  # live jobs do not expire
    await worker.claim(job.id)
    await worker.fail(job.id, "bad_input", "the clip was empty")
    for key in (api.key("job", job.id), api.key("idem", "key-ttl")):
        assert 0 < await redis_client.pttl(key) <= 60_000
    failed = await api.get(job.id)
    assert failed.error == {"code": "bad_input", "message": "the clip was empty"}
    assert (await api.counts())[JobState.FAILED] == 1


async def test_idempotency_key_gives_one_job_across_replicas(pair: tuple[RedisJobStore, RedisJobStore]) -> None:
    a, b = pair
    results = await asyncio.gather(*(store.create(spec(), "same-key") for store in (a, b, a, b)))
    ids = {job.id for job, _ in results}
    assert len(ids) == 1 and sum(created for _, created in results) == 1
    with pytest.raises(IdempotencyConflict, match="same-key"):
        await b.create(spec("another-body"), "same-key")
    entries = await a.redis.xlen(a.stream)
    assert entries == 1  # one job, one queue entry


async def test_job_ids_are_unique_under_concurrent_creates(pair: tuple[RedisJobStore, RedisJobStore]) -> None:
    a, b = pair
    jobs = await asyncio.gather(*(store.create(spec()) for _ in range(20) for store in (a, b)))
    assert len({job.id for job, _ in jobs}) == 40
    assert (await a.counts())[JobState.QUEUED] == 40
    assert [j.id for j in await b.list_jobs(JobState.QUEUED)] == [
        j.id for j in sorted((j for j, _ in jobs), key=lambda j: j.created_at)
    ]


async def test_cancel_queued_and_running(pair: tuple[RedisJobStore, RedisJobStore]) -> None:
    api, worker = pair
    queued, _ = await api.create(spec())
    cancelled = await api.cancel(queued.id)
    assert cancelled.state is JobState.CANCELLED and await worker.claim(queued.id) is None

    running, _ = await api.create(spec())
    await worker.claim(running.id)
    flagged = await api.cancel(running.id)
    assert flagged.state is JobState.RUNNING and flagged.cancel_requested
    seen = await worker.progress(running.id, 0.5, "rollout")  # what the worker's next step sees
    assert seen.cancel_requested
    assert (await worker.mark_cancelled(running.id)).state is JobState.CANCELLED


async def test_a_worker_that_lost_its_job_cannot_cancel_or_fail_it(pair: tuple[RedisJobStore, RedisJobStore]) -> None:
    old, new = pair
    job, _ = await old.create(spec())
    await old.claim(job.id)
    assert await new.requeue(job.id) == "queued"  # old looked dead: its job was taken back ...
    assert (await new.claim(job.id)).state is JobState.RUNNING  # ... and started again elsewhere
    assert (await old.mark_cancelled(job.id)).state is JobState.RUNNING  # no cancel was asked for
    assert (await old.fail(job.id, "shutdown", "stale")).state is JobState.RUNNING  # not its claim any more
    assert (await new.finish(job.id, JobResult({"ok": 1}))).state is JobState.SUCCEEDED
    assert (await new.get(job.id)).timings["queued_s"] >= 0


async def test_reclaim_requeues_then_dead_letters(redis_server: Any, prefix: str) -> None:
    """A worker reads an entry and dies; another takes it over after the visibility timeout, until the
    job has been started max_attempts times: then it fails and goes to the dead-letter stream."""
    api = store_for(redis_server.url, prefix, max_attempts=2)
    dead = store_for(redis_server.url, prefix, max_attempts=2, consumer="dead-worker")
    live = store_for(redis_server.url, prefix, max_attempts=2, consumer="live-worker")
    try:
        await api.ensure_group()
        job, _ = await api.create(spec())
        [entry] = await dead.read(1, 100)
        assert entry.job_id == job.id
        await dead.claim(job.id)  # ... and the process is killed here
        assert await live.autoclaim(min_idle_s=60, count=5) == []  # not idle long enough yet
        [taken] = await live.autoclaim(min_idle_s=0, count=5)
        assert taken == entry
        assert await live.requeue(job.id) == "queued"
        assert (await live.claim(job.id)).state is JobState.RUNNING  # second start ... dies too
        [again] = await dead.autoclaim(min_idle_s=0, count=5)
        assert await dead.requeue(job.id) == "dead"
        await dead.dead_letter(again, "started 2 times")
        failed = await api.get(job.id)
        assert failed.state is JobState.FAILED and failed.error["code"] == "gave_up"
        assert [d["job"] for d in await api.dead_letters()] == [job.id]
        assert await api.redis.xlen(api.stream) == 0
    finally:
        for store in (api, dead, live):
            await store.close()


async def test_release_hands_a_running_job_back_without_counting_it(pair: tuple[RedisJobStore, RedisJobStore]) -> None:
    api, worker = pair
    await api.ensure_group()
    job, _ = await api.create(spec())
    [entry] = await worker.read(1, 100)
    await worker.claim(job.id)
    assert await worker.release(entry) == "released"
    back = await api.get(job.id)
    assert back.state is JobState.QUEUED and back.started_at is None
    [fresh] = await api.read(1, 100)  # a new entry for the next worker; the old one is gone
    assert fresh.job_id == job.id and fresh.entry_id != entry.entry_id
    assert (await api.claim(job.id)).state is JobState.RUNNING


async def test_large_results_go_to_the_shared_folder(redis_server: Any, prefix: str, tmp_path: Path) -> None:
    store = store_for(redis_server.url, prefix, result_max_bytes=1000, result_dir=tmp_path / "results")
    bare = store_for(redis_server.url, prefix, result_max_bytes=1000)
    try:
        big = bytes(range(256)) * 20  # 5120 bytes
        for s in (store, bare):
            job, _ = await s.create(spec())
            await s.claim(job.id)
            ended = await s.finish(job.id, JobResult({"n": 1}, {"video/mp4": big, "small": b"x"}))
            if s is store:
                assert ended.state is JobState.SUCCEEDED
                assert (tmp_path / "results" / job.id / "video_mp4").read_bytes() == big
                assert (await bare.result(job.id)).artifacts == {"video/mp4": big, "small": b"x"}
            else:  # no shared folder: a clear failure naming the settings, not a half-written result
                assert ended.state is JobState.FAILED and ended.error["code"] == "result_too_large"
                assert "LAWM_RESULT_DIR" in ended.error["message"]
    finally:
        await store.close()
        await bare.close()


async def test_unreachable_redis_is_store_unavailable(prefix: str) -> None:
    from service.bench.processes import free_port

    store = RedisJobStore(connect(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5), prefix=prefix)
    try:
        with pytest.raises(StoreUnavailable) as err:
            await store.create(spec())
        answer = answer_for(err.value)
        assert answer.status == 503 and answer.headers == {"Retry-After": "5"}
        assert "unreachable" in err.value.message
    finally:
        await store.close()


async def test_readiness_follows_the_latest_command_across_an_outage(tmp_path: Path, prefix: str) -> None:
    """`/readyz`'s Redis report changes with the first command that finds Redis down or back, without
    waiting for the periodic refresh (whose loop is stopped here to prove it)."""
    from service.bench.redis_server import RedisServer
    from service.jobs.remote import RemoteJobRunner
    from tests.integration.redis.conftest import need_redis_server

    with RedisServer.start_new(tmp_path / "redis", appendonly=True, binary=need_redis_server()) as server:
        store = store_for(server.url, prefix, ttl_s=60.0)
        runner = RemoteJobRunner(store)  # type: ignore[arg-type]
        try:
            assert (await runner.dependency())["ok"] is None  # nothing tried yet: connecting
            job, _ = await store.create(spec())  # type: ignore[attr-defined]
            assert (await runner.dependency())["ok"] is True
            server.stop()
            with pytest.raises(StoreUnavailable):
                await store.get(job.id)  # type: ignore[attr-defined]
            down = await runner.dependency()
            assert down["ok"] is False and "unreachable" in down["error"]
            server.start()
            assert (await store.get(job.id)).state is JobState.QUEUED  # type: ignore[attr-defined]  # AOF kept it
            assert (await runner.dependency())["ok"] is True
        finally:
            await store.close()  # type: ignore[attr-defined]
