"""`service.jobs.worker.Worker` on a real redis-server with small handlers of the tests' own (no model):
jobs shared by two workers run exactly once each, a client's cancel reaches a running job, a
stopping worker hands its job back, a dead worker's job is taken over, a Redis failure mid-job
leaves the job queued instead of failed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.jobs.runner import JobContext, JobError
from service.jobs.store import JobResult, JobSpec, JobState
from service.jobs.worker import Worker
from tests.integration.redis.conftest import store_for

pytestmark = pytest.mark.anyio


class Recorder:
    """A handler that records each run, steps `steps` times and can be held at a step."""

    def __init__(self, steps: int = 3) -> None:
        self.steps = steps
        self.runs: list[tuple[str, str]] = []  # (worker, job id) per start
        self.hold = asyncio.Event()
        self.hold.set()
        self.holding = 0

    def handler(self, worker: str) -> Any:
        async def handle(ctx: JobContext, params: dict[str, Any], inputs: dict[str, bytes]) -> JobResult:
            self.runs.append((worker, ctx.job_id))
            if params.get("bad"):
                raise JobError("bad_input", "asked to fail")
            for i in range(self.steps):
                await ctx.step(f"s{i}", i / self.steps)
                if not self.hold.is_set():
                    self.holding += 1
                    try:
                        await self.hold.wait()
                    finally:
                        self.holding -= 1
            return JobResult({"n": params["n"]}, {"out": inputs["x"] * 2})

        return handle


def make_worker(url: str, prefix: str, rec: Recorder, name: str, **kw: Any) -> Worker:
    store = store_for(url, prefix, consumer=name, blocking_reads=True, ttl_s=60.0, max_attempts=kw.pop("attempts", 3),
                      retries=kw.pop("retries", None))
    # A visibility timeout far above the heartbeat: a loaded machine must not make live workers look dead.
    return Worker(store, {"toy": rec.handler(name)}, heartbeat_s=kw.pop("heartbeat_s", 0.1),
                  visibility_timeout_s=kw.pop("visibility_timeout_s", 3.0), **kw)


async def wait_for(predicate: Any, what: str, polls: int = 2000) -> None:
    for _ in range(polls):
        if await predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"gave up waiting for {what}")


async def test_two_workers_run_every_job_exactly_once(redis_server: Any, prefix: str) -> None:
    api = store_for(redis_server.url, prefix)
    rec = Recorder()
    workers = [make_worker(redis_server.url, prefix, rec, f"w{i}", concurrency=2) for i in range(2)]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        jobs = [(await api.create(JobSpec("toy", {"n": i}, {"x": bytes([i])}, f"fp{i}")))[0] for i in range(24)]

        async def all_ended() -> bool:
            return all(job.done for job in await asyncio.gather(*(api.get(j.id) for j in jobs)))

        await wait_for(all_ended, "every job to end")
        for i, job in enumerate(jobs):
            ended = await api.get(job.id)
            result = await api.result(job.id)
            assert ended.state is JobState.SUCCEEDED and result.metrics == {"n": i}
            assert result.artifacts == {"out": bytes([i]) * 2}
        started = [job_id for _, job_id in rec.runs]
        assert sorted(started) == sorted(j.id for j in jobs)  # each started once: no duplicate, none lost
        assert {w for w, _ in rec.runs} == {"w0", "w1"}  # both took a share
        assert await api.redis.xlen(api.stream) == 0  # every entry acknowledged and removed
    finally:
        for w in workers:
            await w.stop(5)
        await asyncio.gather(*tasks)
        await api.close()


async def test_cancel_reaches_a_running_job(redis_server: Any, prefix: str) -> None:
    api = store_for(redis_server.url, prefix)
    rec = Recorder()
    rec.hold.clear()
    worker = make_worker(redis_server.url, prefix, rec, "w")
    task = asyncio.create_task(worker.run())
    try:
        job, _ = await api.create(JobSpec("toy", {"n": 1}, {"x": b"a"}, "fp"))

        async def holding() -> bool:
            return rec.holding == 1

        await wait_for(holding, "the job to run")
        assert (await api.cancel(job.id)).state is JobState.RUNNING  # flagged; the worker stops it

        async def cancelled() -> bool:
            return (await api.get(job.id)).state is JobState.CANCELLED

        await wait_for(cancelled, "the cancel to reach the worker")  # the heartbeat cancels the held task
        assert await api.result(job.id) is None
    finally:
        rec.hold.set()
        await worker.stop(5)
        await task
        await api.close()


async def test_stop_hands_a_running_job_to_another_worker(redis_server: Any, prefix: str) -> None:
    api = store_for(redis_server.url, prefix)
    rec = Recorder()
    rec.hold.clear()
    first = make_worker(redis_server.url, prefix, rec, "first")
    t1 = asyncio.create_task(first.run())
    job, _ = await api.create(JobSpec("toy", {"n": 7}, {"x": b"z"}, "fp"))

    async def holding() -> bool:
        return rec.holding == 1

    await wait_for(holding, "the job to start")
    assert await first.stop(timeout_s=0.05) == 1  # SIGTERM, and the job does not finish in time
    await t1
    back = await api.get(job.id)
    assert back.state is JobState.QUEUED and first.counts["released"] == 1
    rec.hold.set()
    second = make_worker(redis_server.url, prefix, rec, "second")
    t2 = asyncio.create_task(second.run())
    try:
        async def done() -> bool:
            return (await api.get(job.id)).state is JobState.SUCCEEDED

        await wait_for(done, "the second worker to finish it")
        assert [w for w, _ in rec.runs] == ["first", "second"]
        assert (await api.result(job.id)).metrics == {"n": 7}
    finally:
        await second.stop(5)
        await t2
        await api.close()


async def test_a_dead_workers_job_is_taken_over(redis_server: Any, prefix: str) -> None:
    """An entry read by a consumer that never renews it (a SIGKILLed worker) is reclaimed after the
    visibility timeout, run by a live worker and acknowledged."""
    api = store_for(redis_server.url, prefix)
    ghost = store_for(redis_server.url, prefix, consumer="ghost")
    await api.ensure_group()
    job, _ = await api.create(JobSpec("toy", {"n": 3}, {"x": b"q"}, "fp"))
    [entry] = await ghost.read(1, 100)
    await ghost.claim(job.id)  # it started the job, then died
    rec = Recorder()
    live = make_worker(redis_server.url, prefix, rec, "live", heartbeat_s=0.05, visibility_timeout_s=0.5)
    task = asyncio.create_task(live.run())
    try:
        async def done() -> bool:
            return (await api.get(job.id)).state is JobState.SUCCEEDED

        await wait_for(done, "the job to be reclaimed and finished")
        assert live.counts["reclaimed"] == 1 and rec.runs == [("live", job.id)]
        assert (await api.redis.xpending(api.stream, "workers"))["pending"] == 0
        assert entry.job_id == job.id
    finally:
        await live.stop(5)
        await task
        await api.close()
        await ghost.close()


async def test_handler_errors_fail_the_job_once(redis_server: Any, prefix: str) -> None:
    api = store_for(redis_server.url, prefix)
    rec = Recorder()
    worker = make_worker(redis_server.url, prefix, rec, "w")
    task = asyncio.create_task(worker.run())
    try:
        job, _ = await api.create(JobSpec("toy", {"n": 0, "bad": True}, {"x": b""}, "fp"))

        async def ended() -> bool:
            return (await api.get(job.id)).done

        await wait_for(ended, "the job to fail")
        failed = await api.get(job.id)
        assert failed.state is JobState.FAILED and failed.error == {"code": "bad_input", "message": "asked to fail"}
        assert len(rec.runs) == 1 and await api.redis.xlen(api.stream) == 0  # not retried: it would fail again
    finally:
        await worker.stop(5)
        await task
        await api.close()


async def test_redis_gone_mid_job_leaves_it_queued(redis_server: Any, prefix: str, tmp_path: Any) -> None:
    """The job's own store fails mid-run (its Redis went away): the job is neither failed nor acknowledged."""
    from service.bench.redis_server import RedisServer

    with RedisServer.start_new(tmp_path / "r", appendonly=True, binary=redis_server.binary) as own:
        api = store_for(own.url, prefix)
        rec = Recorder()
        rec.hold.clear()
        worker = make_worker(own.url, prefix, rec, "w", heartbeat_s=0.5, visibility_timeout_s=1.0, retries=0)
        task = asyncio.create_task(worker.run())
        job, _ = await api.create(JobSpec("toy", {"n": 1}, {"x": b"a"}, "fp"))

        async def holding() -> bool:
            return rec.holding == 1

        await wait_for(holding, "the job to start")
        own.stop()
        rec.hold.set()  # its next step needs Redis, which is gone

        async def left() -> bool:
            return worker.counts["left_pending"] == 1

        await wait_for(left, "the worker to give the job up", polls=3000)
        own.start()
        assert (await api.get(job.id)).state is JobState.RUNNING  # not failed: it will run again
        await worker.stop(1)
        await task
        await api.close()


def test_bad_worker_settings_are_refused_with_the_setting_named(redis_server: Any, prefix: str) -> None:
    store = store_for(redis_server.url, prefix)
    with pytest.raises(ValueError, match="job_visibility_timeout_s .* twice worker_heartbeat_s"):
        Worker(store, {}, heartbeat_s=5, visibility_timeout_s=6)
    with pytest.raises(ValueError, match="LAWM_WORKER_CONCURRENCY"):
        Worker(store, {}, concurrency=0)
    from service.settings import Settings

    with pytest.raises(ValueError, match="at least twice"):
        Settings(redis_url="redis://x:6379/0", worker_heartbeat_s=5, job_visibility_timeout_s=6)


def test_lawm_worker_needs_a_redis_url() -> None:
    from typer.testing import CliRunner

    from service.cli import app

    result = CliRunner().invoke(app, ["worker"], env={"LAWM_REDIS_URL": ""})
    assert result.exit_code == 2 and "LAWM_REDIS_URL" in result.output and "--redis-url" in result.output


def test_a_malformed_redis_url_is_refused_at_start() -> None:
    from typer.testing import CliRunner

    from service.cli import app

    result = CliRunner().invoke(app, ["worker", "--redis-url", "localhost:6379"])
    assert result.exit_code != 0 and "redis://HOST:6379/0" in result.output and "LAWM_REDIS_URL" in result.output
