"""Admission and small inputs through the real app (tiny model, 32 px): small video resized up with
`resized_from` (or refused when the operator says so), the decode stage's 429 with Retry-After, and
the jobs cap answered before the body is read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.jobs.store import JobSpec
from tests.integration.service.conftest import running_app, service_settings
from tests.unit.service.media_files import mp4, small_video

pytestmark = pytest.mark.anyio

SMALL = small_video("ffv1", "matroska", "gray", 30, 24)  # gray FFV1, below the tiny model's 32 px crop


@pytest.fixture(scope="module")
async def served(tiny_model_repo: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    settings = service_settings(tiny_model_repo, max_queued_jobs=1, decode_max_backlog_frames=100)
    async with running_app(settings) as pair:
        yield pair


async def test_small_video_is_resized_up_and_says_so(served: tuple[httpx.AsyncClient, Any]) -> None:
    client, _ = served
    r = await client.post("/v1/latent-actions", content=SMALL, headers={"content-type": "video/x-matroska"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resized_from"] == [30, 24] and body["steps"] >= 1
    r = await client.post("/v1/latent-actions", content=mp4(16), headers={"content-type": "video/mp4"})  # 48 px
    assert r.status_code == 200 and r.json()["resized_from"] is None


async def test_small_video_is_refused_when_the_operator_says_so(tiny_model_repo: Path) -> None:
    async with running_app(service_settings(tiny_model_repo, small_videos="refuse")) as (client, _):
        r = await client.post("/v1/latent-actions", content=SMALL, headers={"content-type": "video/x-matroska"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "video_too_small"


async def test_a_full_decode_stage_answers_429_at_once(served: tuple[httpx.AsyncClient, Any]) -> None:
    client, app = served
    stage = app.state.decode_stage
    stage.backlog += 95  # as if other uploads held 95 of its 100 frames
    try:
        r = await client.post("/v1/latent-actions", content=mp4(16), headers={"content-type": "video/mp4"})
    finally:
        stage.backlog -= 95
    assert r.status_code == 429 and r.json()["error"]["code"] == "overloaded"
    assert int(r.headers["retry-after"]) >= 1
    r = await client.post("/v1/latent-actions", content=mp4(16), headers={"content-type": "video/mp4"})
    assert r.status_code == 200


async def test_a_full_decode_stage_refuses_an_upload_before_reading_it(served: tuple[httpx.AsyncClient, Any]) -> None:
    client, app = served
    stage = app.state.decode_stage
    read: list[int] = []

    async def upload() -> AsyncIterator[bytes]:
        read.append(1)  # the server asked for the body
        yield mp4(16)

    stage.backlog += 100  # every frame of its budget is taken: not even one more fits
    try:
        r = await client.post("/v1/latent-actions", content=upload(), headers={"content-type": "video/mp4"})
        frames = await client.post("/v1/latent-actions", json={"frames": [[[[0, 0, 0]] * 32] * 32] * 4})
    finally:
        stage.backlog -= 100
    assert r.status_code == 429 and r.json()["error"]["code"] == "overloaded" and read == []
    assert frames.status_code != 429  # JSON frames never reach the decode stage: not refused for its backlog


async def test_an_encoder_queue_over_its_wait_budget_refuses_before_the_body_is_read(
    served: tuple[httpx.AsyncClient, Any],
) -> None:
    """The model's queues are checked at the door too: a request they would refuse after decoding is
    refused before its upload is read (no decode spent on it), with the batcher's Retry-After."""
    client, app = served
    encoder = app.state.engine.batchers["encoder"]
    read: list[int] = []

    async def upload() -> AsyncIterator[bytes]:
        read.append(1)
        yield mp4(16)

    measured = encoder._seconds_per_row
    encoder._seconds_per_row = 1.0  # as if each row took a second: a batch in flight is over budget
    encoder._inflight_batch = type("Held", (), {"rows": 10})()
    try:
        r = await client.post("/v1/latent-actions", content=upload(), headers={"content-type": "video/mp4"})
    finally:
        encoder._seconds_per_row, encoder._inflight_batch = measured, None
    assert r.status_code == 429 and read == [], r.text
    assert "budget" in r.json()["error"]["message"] and float(r.headers["retry-after"]) >= 1
    r = await client.post("/v1/latent-actions", content=mp4(16), headers={"content-type": "video/mp4"})
    assert r.status_code == 200


async def test_a_full_job_queue_answers_429_before_reading_the_body(served: tuple[httpx.AsyncClient, Any]) -> None:
    client, app = served
    await app.state.jobs.store.create(JobSpec("transfer", {}, {}, "held"))  # queued, never run: the queue is full
    r = await client.post("/v1/transfers", files={"clip_a": ("a.mp4", mp4(16)), "clip_b": ("b.mp4", mp4(16))})
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_jobs"
    assert int(r.headers["retry-after"]) >= 1


async def test_the_decode_stage_is_in_the_metrics(served: tuple[httpx.AsyncClient, Any]) -> None:
    client, app = served
    app.state.decode_stage.backlog += 95
    try:
        await client.post("/v1/latent-actions", content=mp4(16), headers={"content-type": "video/mp4"})
    finally:
        app.state.decode_stage.backlog -= 95
    text = (await client.get("/metrics")).text
    assert 'lawm_rejections_total{component="decode",reason="queue_full"}' in text
    assert 'lawm_queue_depth{component="decode"}' in text


async def test_planner_components_get_the_plan_wait_budget(served: tuple[httpx.AsyncClient, Any]) -> None:
    """A plan's hundreds of rows per iteration queue under their own, longer budget."""
    _, app = served
    batchers, settings = app.state.engine.batchers, app.state.settings
    planner = [n for n in ("world_model_step", "world_model_kv_step", "controller") if n in batchers]
    assert planner, sorted(batchers)
    assert {batchers[n].max_queue_wait_s for n in planner} == {settings.plan_max_queue_wait_s}
    assert batchers["encoder"].max_queue_wait_s == settings.max_queue_wait_s != settings.plan_max_queue_wait_s
