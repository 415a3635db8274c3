"""The app with `redis_url` set (httpx on its ASGI transport, lifespan running, tiny model): jobs go to
Redis for workers, goals are shared between replicas, and a dead Redis turns only the job endpoints
into 503 + Retry-After while the synchronous ones and readiness carry on."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.bench.processes import free_port
from service.jobs.redis_store import RedisJobStore, connect
from tests.integration.service.conftest import running_app, service_settings
from training.data.samples import sample_clips
from training.data.video import encode_png_strip

pytestmark = pytest.mark.anyio


def png_b64(frame: np.ndarray) -> str:
    return base64.b64encode(encode_png_strip(frame[None])).decode()


def frames(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [png_b64(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


def upload() -> dict[str, Any]:
    clips = sample_clips()
    return {"clip_a": ("a.mp4", clips["carphone_pristine"].read_bytes(), "video/mp4"),
            "clip_b": ("b.mp4", clips["bikes"].read_bytes(), "video/mp4")}


async def test_jobs_are_queued_in_redis_and_goals_shared(tiny_model_repo: Path, redis_server: Any, prefix: str) -> None:
    settings = service_settings(tiny_model_repo, redis_url=redis_server.url, redis_prefix=prefix)
    async with running_app(settings) as (one, app_one), running_app(settings) as (two, _):
        submitted = await one.post("/v1/transfers", files=upload(), headers={"Idempotency-Key": "k1"})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        again = await two.post("/v1/transfers", files=upload(), headers={"Idempotency-Key": "k1"})
        assert again.json()["id"] == job_id and again.headers["idempotent-replayed"] == "true"
        seen = (await two.get(f"/v1/jobs/{job_id}")).json()  # the other replica sees it: it lives in Redis
        assert seen["state"] == "queued"  # no worker runs here: the API only enqueues
        store = RedisJobStore(connect(redis_server.url), prefix=prefix)
        try:
            assert await store.redis.xlen(store.stream) == 1
        finally:
            await store.close()
        cancelled = await two.delete(f"/v1/jobs/{job_id}")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        assert (await one.get(f"/v1/jobs/{job_id}/result")).json()["error"]["code"] == "job_cancelled"

        goal = await one.post("/v1/goals", json={"image": frames(1, seed=3)[0]})
        assert goal.status_code == 200
        plan = await two.post("/v1/plan", json={"observation": frames(1, seed=4)[0], "goal_id": goal.json()["goal_id"],
                                                "overrides": {"horizon": 2, "samples": 8, "elites": 2, "iterations": 1}})
        assert plan.status_code == 200, plan.text  # the goal posted to one replica plans on the other

        for _ in range(100):  # the counts refresh every second
            ready = (await one.get("/readyz")).json()
            if ready["redis"].get("ok"):
                break
            await asyncio.sleep(0.05)
        assert ready["ready"] is True and ready["redis"]["ok"] is True and ready["redis"]["workers"] == 0
        assert app_one.state.latents.shared and app_one.state.goals.shared


async def test_redis_down_fails_only_the_job_endpoints(tiny_model_repo: Path, prefix: str) -> None:
    settings = service_settings(tiny_model_repo, redis_url=f"redis://127.0.0.1:{free_port()}/0",
                                redis_prefix=prefix, redis_timeout_s=0.5)
    async with running_app(settings) as (client, _):
        submitted = await client.post("/v1/transfers", files=upload())
        assert submitted.status_code == 503 and submitted.headers["retry-after"] == "5"
        error = submitted.json()["error"]
        assert error["code"] == "jobs_unavailable" and "Redis" in error["message"] and "retry" in error["hint"]
        assert (await client.get("/v1/jobs/abc")).status_code == 503
        assert (await client.get("/v1/jobs")).status_code == 503
        latents = await client.post("/v1/latent-actions", json={"frames": frames(8)})
        assert latents.status_code == 200, latents.text  # synchronous endpoints keep serving
        for _ in range(100):
            ready = await client.get("/readyz")
            if ready.json()["redis"].get("ok") is False:
                break
            await asyncio.sleep(0.05)
        assert ready.status_code == 200 and ready.json()["redis"]["ok"] is False  # reported, still in service
        assert "unreachable" in ready.json()["redis"]["error"]
