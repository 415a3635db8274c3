"""POST /v1/transfers' intake: a cap on queued jobs (429 + Retry-After) checked before the body is read,
and queued jobs that hold their upload's bytes (checked from its headers), decoded when they run."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from service.errors import ApiError
from service.inputs import Body, Upload
from service.jobs.runner import JobError, JobRunner
from service.jobs.store import InProcessJobStore, JobResult, JobSpec
from service.jobs.transfer import UPLOAD, decode_input
from service.media import MediaLimits, decode_clip_bytes
from service.routes.jobs import _clip, check_capacity
from service.settings import Settings
from tests.unit.service.media_files import mp4, random_bytes, small_video

LIMITS = MediaLimits(size=32, fps=4.0, max_bytes=8 << 20, max_frames=64, max_pixels=2000 * 2000, max_duration_s=30.0)


def test_a_full_job_queue_is_a_429_with_retry_after() -> None:
    async def go() -> None:
        store = InProcessJobStore()

        async def never(*_: object) -> JobResult:
            raise AssertionError("not run")

        runner = JobRunner(store, {"t": never}, concurrency=1)
        settings = Settings(max_queued_jobs=2)
        await check_capacity(runner, settings)  # empty: admitted
        for i in range(2):
            await store.create(JobSpec("t", {}, {}, str(i)))
        runner.mean_run_s = 7.0
        with pytest.raises(ApiError) as info:
            await check_capacity(runner, settings)
        err = info.value
        assert (err.status, err.code) == (429, "too_many_jobs")
        assert err.headers == {"Retry-After": "7"}  # one job must end first, at the measured 7 s a job

    asyncio.run(go())


def test_a_queued_job_holds_the_upload_bytes_and_decodes_them_when_it_runs() -> None:
    data = mp4(24)
    body = Body(None, {"clip_a": Upload("a.mp4", "video/mp4", data)})
    held, kind, info = _clip(body, "clip_a", None, LIMITS)
    assert held is data and kind == UPLOAD  # the bytes as uploaded, not frames
    assert info["frames"] == 12 and info["resized_from"] is None  # 3 s at 4 fps, from the header
    frames = decode_input(held, kind, dataclasses.asdict(LIMITS), "clip_a")
    np.testing.assert_array_equal(frames, decode_clip_bytes(data, filename="a.mp4", limits=LIMITS).frames)


def test_small_uploads_are_kept_and_bad_ones_refused_at_once() -> None:
    small = small_video("gif", "gif", "rgb8", 24, 20)
    _, kind, info = _clip(Body(None, {"clip_b": Upload("s.gif", "image/gif", small)}), "clip_b", None, LIMITS)
    assert kind == UPLOAD and info["resized_from"] == [24, 20]
    with pytest.raises(ApiError) as info_err:
        _clip(Body(None, {"clip_a": Upload("x", "video/mp4", random_bytes())}), "clip_a", None, LIMITS)
    assert info_err.value.status == 422
    with pytest.raises(JobError):  # a file damaged past its headers fails the job when decoded
        decode_input(random_bytes(), UPLOAD, {"size": 32, "fps": 4.0, "max_frames": 64, "max_pixels": 10**6,
                                              "max_duration_s": 30.0}, "clip_a")
