"""The decode stage's admission: bounded concurrency, a backlog counted in work, and 429 (QueueFull with
Retry-After from the measured rate) at once when the backlog is over its work or wait budget. The
work here blocks on events the test controls; no timing is asserted."""

from __future__ import annotations

import asyncio
import threading

import pytest

from service.errors import answer_for
from service.inference.errors import QueueFull
from service.inference.stage import Stage
from service.inputs import Body, Upload
from service.media import MediaLimits, clip_in_stage
from tests.unit.service.media_files import mp4

LIMITS = MediaLimits(size=32, fps=4.0, max_bytes=8 << 20, max_frames=64, max_pixels=2000 * 2000, max_duration_s=30.0)


class Gate:
    def __init__(self) -> None:
        self.open = threading.Event()
        self.running = 0
        self.peak = 0
        self.lock = threading.Lock()

    def work(self) -> str:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        self.open.wait(30)
        with self.lock:
            self.running -= 1
        return "done"


async def until(predicate) -> None:  # noqa: ANN001
    for _ in range(3000):
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never became true")


def test_a_tiny_stage_runs_one_at_a_time_and_refuses_past_its_work_budget() -> None:
    async def go() -> None:
        stage, gate = Stage("decode", concurrency=1, max_backlog=100, max_wait_s=60), Gate()
        first = asyncio.ensure_future(stage.run(gate.work, 60))
        second = asyncio.ensure_future(stage.run(gate.work, 30))
        await until(lambda: stage.backlog == 90 and gate.running == 1)
        with pytest.raises(QueueFull) as info:  # 90 + 20 > 100 units: refused at once, nothing queued
            await stage.run(gate.work, 20)
        assert stage.backlog == 90
        answer = answer_for(info.value)
        assert answer.status == 429 and answer.headers and int(answer.headers["Retry-After"]) >= 1
        gate.open.set()
        assert await asyncio.gather(first, second) == ["done", "done"]
        assert gate.peak == 1 and stage.backlog == 0
        assert stage.seconds_per_unit is not None  # learnt from the finished work
        assert await stage.run(gate.work, 500) == "done"  # an idle stage takes anything
        stage.close()

    asyncio.run(go())


def test_the_wait_budget_uses_the_measured_rate_for_retry_after() -> None:
    async def go() -> None:
        stage, gate = Stage("decode", concurrency=2, max_backlog=10**6, max_wait_s=2.0), Gate()
        stage.seconds_per_unit = 0.1  # as measured: 0.1 s per frame, two at once
        running = asyncio.ensure_future(stage.run(gate.work, 30))  # 30 frames: 1.5 s of wait, admitted
        await until(lambda: stage.backlog == 30)
        with pytest.raises(QueueFull) as info:  # 30 + 20 frames = 2.5 s > 2 s budget
            stage.admit(20)
        # (50 - 2 s * 2 / 0.1 = 10 frames too many) * 0.1 s / 2 = 0.5 s -> Retry-After 1
        assert info.value.retry_after_s == pytest.approx(1.0)
        stage.admit(10)  # 2.0 s: within the budget
        with pytest.raises(QueueFull) as info:
            stage.admit(100)  # 130 frames: 6.5 s; 90 frames too many -> 4.5 s
        assert info.value.retry_after_s == pytest.approx(4.5)
        assert answer_for(info.value).headers == {"Retry-After": "5"}
        gate.open.set()
        await running
        stage.close()

    asyncio.run(go())


def test_the_door_keeps_half_the_budget_for_requests_already_past_it() -> None:
    async def go() -> None:
        stage, gate = Stage("decode", concurrency=1, max_backlog=10**6, max_wait_s=2.0), Gate()
        stage.seconds_per_unit = 0.1
        running = asyncio.ensure_future(stage.run(gate.work, 15))  # 1.5 s of wait queued
        await until(lambda: stage.backlog == 15)
        stage.admit(4)  # 1.9 s: within the whole budget, so a request past the door still fits
        with pytest.raises(QueueFull, match=r"budget 1 s") as info:
            stage.at_the_door()  # 1.6 s > half the budget: refused before its body is read
        assert info.value.retry_after_s == pytest.approx(1.0)  # 6 frames over, 0.6 s -> at least 1
        gate.open.set()
        await running
        stage.at_the_door()  # idle again: admitted
        stage.close()

    asyncio.run(go())


def test_uploads_enter_the_stage_with_their_frames_as_work() -> None:
    async def go() -> None:
        stage = Stage("decode", concurrency=1, max_backlog=10, max_wait_s=60)
        body = Body(None, {"file": Upload("a.mp4", "video/mp4", mp4(24))})  # 3 s at 8 fps: 24 source frames
        frames, source = await clip_in_stage(stage, body, "file", None, LIMITS)  # idle: admitted
        assert frames.shape == (12, 32, 32, 3) and source is not None
        gate = Gate()
        blocker = asyncio.ensure_future(stage.run(gate.work, 1))
        await until(lambda: stage.backlog == 1)
        with pytest.raises(QueueFull):  # 1 + 24 frames > 10
            await clip_in_stage(stage, body, "file", None, LIMITS)
        gate.open.set()
        await blocker
        stage.close()

    asyncio.run(go())


def test_work_that_would_start_past_its_deadline_is_refused() -> None:
    async def go() -> None:
        import time

        from service.inference.errors import DeadlineExceeded

        stage, gate = Stage("decode", concurrency=1, max_backlog=10**6, max_wait_s=3600), Gate()
        stage.seconds_per_unit = 1.0
        running = asyncio.ensure_future(stage.run(gate.work, 100))  # 100 s of backlog at the measured rate
        await until(lambda: stage.backlog == 100)
        with pytest.raises(DeadlineExceeded):
            await stage.run(gate.work, 1, deadline=time.monotonic() + 5.0)
        assert stage.backlog == 100  # refused, not queued
        late = asyncio.ensure_future(stage.run(gate.work, 1, deadline=time.monotonic() + 1000.0))  # fits: admitted
        await until(lambda: stage.backlog == 101)
        gate.open.set()
        await running
        assert await late == "done"
        stage.close()

    asyncio.run(go())
