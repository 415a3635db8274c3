"""Transfer jobs through the app (httpx on its ASGI transport, lifespan running) on a tiny model and the
real sample clips: submit -> 202 + Location -> progress -> MP4 that PyAV decodes, metrics equal to the
offline evaluation's; cancellation of queued and running jobs; Idempotency-Key; 404s and bad submissions.

A `Gate` holds the world-model calls of a running job so each test decides when it moves on (no
sleeps or timed assertions).
"""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch

from exporters.repository import CHECKPOINT_DIR
from service.settings import Settings
from tests.integration.service.conftest import running_app, service_settings
from tests.integration.service.jobs_support import Gate, until
from tests.service_fixtures import TINY_NAME, TINY_VERSION
from training.data.samples import sample_clips
from training.data.video import encode_png_strip

pytestmark = pytest.mark.anyio
TERMINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def settings(tiny_model_repo: Path) -> Settings:
    """The tiny exported repository on onnxruntime (with the API key the shared client sends)."""
    return service_settings(tiny_model_repo, max_batch_size=4, plan_max_batch_size=8)


@pytest.fixture(scope="module")
def clips() -> dict[str, bytes]:
    paths = sample_clips()
    return {"carphone": paths["carphone_pristine"].read_bytes(), "bikes": paths["bikes"].read_bytes()}


def upload(a: bytes, b: bytes) -> dict[str, Any]:
    return {"clip_a": ("a.mp4", a, "video/mp4"), "clip_b": ("b.mp4", b, "video/mp4")}


async def wait_done(client: Any, location: str) -> dict[str, Any]:
    job: dict[str, Any] = {}

    async def poll() -> bool:
        nonlocal job
        job = (await client.get(location)).json()
        return job["state"] in TERMINAL

    for _ in range(4000):
        if await poll():
            return job
        await asyncio.sleep(0.01)
    raise AssertionError(f"job never ended: {job}")


def decode_mp4(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def offline_metrics(checkpoint: Path, a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """`lawm eval transfer`'s math on the torch model for the same decoded frames."""
    from exporters.torch_runtime import build_model
    from training.evaluation.transfer import own_and_cycled, pixel_scores

    model, _ = build_model(checkpoint)
    a = a[: len(a) // 2 * 2]  # whole states only
    ta = torch.from_numpy(a).permute(0, 3, 1, 2)[None]  # [1, T, 3, H, W] uint8
    tb = torch.from_numpy(b[: len(a)]).permute(0, 3, 1, 2)[None]
    truth, own, cycled = own_and_cycled(model, ta, tb)
    first = model.encode(ta)[:, :1]
    return {
        "orig_l1": (own - truth).abs().mean().item(),
        "transfer_l1": (cycled - truth).abs().mean().item(),
        "orig_psnr": pixel_scores(model, first, own, ta)["psnr"],
        "transfer_psnr": pixel_scores(model, first, cycled, ta)["psnr"],
        "transfer_ssim": pixel_scores(model, first, cycled, ta)["ssim"],
    }


async def test_transfer_job_from_submit_to_an_mp4_pyav_decodes(
    settings: Settings, clips: dict[str, bytes]
) -> None:
    async with running_app(settings) as (client, app):
        response = await client.post("/v1/transfers", files=upload(clips["carphone"], clips["bikes"]))
        assert response.status_code == 202, response.text
        job = response.json()
        location = response.headers["location"]
        assert location == f"/v1/jobs/{job['id']}" and job["state"] in ("queued", "running")
        assert job["links"]["result"] == f"{location}/result"
        done = await wait_done(client, location)
        assert done["state"] == "succeeded" and done["progress"] == 1.0, done
        for stage in (
            "encode_s",
            "rollout_s",
            "render_s",
            "cycle_s",
            "mp4_s",
            "queued_s",
            "run_s",
            "total_s",
        ):
            assert done["timings"][stage] >= 0

        video = await client.get(f"{location}/result")
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        frames = decode_mp4(video.content)
        geo = app.state.engine.geo
        assert done["params"]["clip_a"]["frames"] == 17  # carphone: 4.2 s at the model's 4 fps
        assert len(frames) == 16  # [s_B0, 7 predicted states] x 2 frames each
        assert frames[0].shape == (geo.image_size, geo.image_size, 3)

        report = await client.get(f"{location}/result", headers={"Accept": "application/json"})
        assert report.status_code == 200
        body = report.json()
        metrics = body["metrics"]
        assert metrics["steps"] == 7 and metrics["render"]["frames"] == 16
        assert body["video"]["bytes"] == len(video.content)
        assert (await client.get(f"{location}/result?format=json")).json()["metrics"] == metrics
        assert (await client.get(f"{location}/result", headers={"Accept": "image/png"})).status_code == 406
        assert (
            await client.get(f"{location}/result?format=mp4", headers={"Accept": "application/json"})
        ).content == video.content

        # the same math as `lawm eval transfer`, on the same decoded frames
        from service.media import MediaLimits, decode_clip_bytes

        limits = MediaLimits.from_settings(settings, size=geo.image_size, fps=geo.fps)
        a = decode_clip_bytes(clips["carphone"], filename="a.mp4", limits=limits).frames
        b = decode_clip_bytes(clips["bikes"], filename="b.mp4", limits=limits).frames
        offline = offline_metrics(settings.repo / TINY_NAME / str(TINY_VERSION) / CHECKPOINT_DIR, a, b)
        cycle = metrics["cycle"]
        assert cycle["orig_l1"] == pytest.approx(offline["orig_l1"], rel=1e-4)
        assert cycle["transfer_l1"] == pytest.approx(offline["transfer_l1"], rel=1e-4)
        assert cycle["ratio_l1"] == pytest.approx(offline["transfer_l1"] / offline["orig_l1"], rel=1e-4)
        # the service scores the frames it renders (uint8), offline scores float frames: same to ~0.1 dB
        assert metrics["pixels"]["orig"]["psnr"] == pytest.approx(offline["orig_psnr"], abs=0.1)
        assert metrics["pixels"]["transfer"]["psnr"] == pytest.approx(offline["transfer_psnr"], abs=0.1)
        assert metrics["pixels"]["transfer"]["ssim"] == pytest.approx(offline["transfer_ssim"], abs=0.02)
        assert -1 <= cycle["latent_cosine"] <= 1 and cycle["latent_l1"] >= 0

        # a job that ended cannot be cancelled; its result stays
        assert (await client.delete(location)).status_code == 409
        assert (await client.get(f"{location}/result")).status_code == 200


async def test_progress_is_visible_and_cancel_stops_running_and_queued_jobs(
    settings: Settings, clips: dict[str, bytes]
) -> None:
    async with running_app(settings) as (client, app):
        gate = Gate(app.state.engine, "world_model_prefill")  # holds each job at its first (KV-cached) rollout step
        first = await client.post("/v1/transfers", files=upload(clips["carphone"], clips["bikes"]))
        second = await client.post("/v1/transfers", files=upload(clips["bikes"], clips["carphone"]))
        running, queued = first.headers["location"], second.headers["location"]
        await until(lambda: gate.waiting == 1, "the first job to reach its rollout")

        job = (await client.get(running)).json()
        assert job["state"] == "running" and job["stage"] == "rollout" and 0 < job["progress"] < 1
        assert job["timings"]["encode_s"] >= 0 and job["timings"]["queued_s"] >= 0
        waiting = await client.get(queued)
        assert (
            waiting.json()["state"] == "queued" and waiting.headers["retry-after"] == "1"
        )  # one job at a time
        assert (await client.get(f"{running}/result")).status_code == 409  # not finished yet

        cancelled = await client.delete(queued)
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        stopping = await client.delete(running)
        assert stopping.status_code in (200, 202) and stopping.json()["cancel_requested"]
        ended = await wait_done(client, running)
        assert ended["state"] == "cancelled" and ended["progress"] < 1
        result = await client.get(f"{running}/result")
        assert result.status_code == 409 and result.json()["error"]["code"] == "job_cancelled"
        assert (await client.delete(queued)).status_code == 200  # cancelling twice is fine
        assert gate.waiting == 0  # the held call was withdrawn, not left waiting

        gate.open()  # the server still runs jobs afterwards
        again = await client.post(
            "/v1/transfers", files=upload(clips["carphone"], clips["bikes"]), data={"request": '{"steps": 2}'}
        )
        done = await wait_done(client, again.headers["location"])
        assert done["state"] == "succeeded" and done["params"]["steps"] == 2
        assert len(decode_mp4((await client.get(f"{again.headers['location']}/result")).content)) == 6

        listed = (await client.get("/v1/jobs", params={"state": "cancelled"})).json()["jobs"]
        assert {j["id"] for j in listed} == {first.json()["id"], second.json()["id"]}
        metrics = (await client.get("/metrics")).text
        assert 'lawm_jobs_total{state="cancelled"} 2.0' in metrics
        assert 'lawm_jobs_total{state="succeeded"} 1.0' in metrics
        assert 'lawm_jobs{state="running"} 0.0' in metrics and 'lawm_jobs{state="queued"} 0.0' in metrics


async def test_idempotency_key_gives_one_job_per_key_and_body(
    settings: Settings, clips: dict[str, bytes]
) -> None:
    async with running_app(settings) as (client, app):
        gate = Gate(app.state.engine, "world_model_prefill")
        files = upload(clips["carphone"], clips["bikes"])
        key = {"Idempotency-Key": "3f0c6a52-transfer-1"}
        responses = await asyncio.gather(
            *(client.post("/v1/transfers", files=files, headers=key) for _ in range(4))
        )
        assert [r.status_code for r in responses] == [202] * 4
        assert len({r.json()["id"] for r in responses}) == 1
        assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 3
        assert len((await client.get("/v1/jobs")).json()["jobs"]) == 1

        other = await client.post("/v1/transfers", files=files, headers=key, data={"request": '{"steps": 3}'})
        assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
        fresh = await client.post("/v1/transfers", files=files, headers={"Idempotency-Key": "another-key"})
        assert fresh.status_code == 202 and fresh.json()["id"] != responses[0].json()["id"]
        assert (
            await client.post("/v1/transfers", files=files, headers={"Idempotency-Key": "x" * 300})
        ).status_code == 400
        gate.open()
        for location in (responses[0].headers["location"], fresh.headers["location"]):
            assert (await wait_done(client, location))["state"] == "succeeded"
        # the key still maps to the finished job
        replay = await client.post("/v1/transfers", files=files, headers=key)
        assert replay.status_code == 202 and replay.json()["state"] == "succeeded"


def _png_frames(frames: np.ndarray) -> list[str]:
    return [base64.b64encode(encode_png_strip(f[None])).decode() for f in frames]


async def test_unknown_jobs_and_bad_submissions_answer_json_errors(
    settings: Settings, clips: dict[str, bytes]
) -> None:
    async with running_app(settings) as (client, app):
        for method, path in [
            ("GET", "/v1/jobs/nope"),
            ("GET", "/v1/jobs/nope/result"),
            ("DELETE", "/v1/jobs/nope"),
        ]:
            response = await client.request(method, path)
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "job_not_found" and response.json()["error"]["hint"]
        carphone = clips["carphone"]
        bad = [
            ({"clip_a": ("a.mp4", carphone, "video/mp4")}, {}, 422, "invalid_request"),  # no clip_b
            (upload(b"", carphone), {}, 400, "empty_upload"),
            (upload(carphone[: len(carphone) // 3], carphone), {}, None, None),  # truncated: 4xx from media
            (upload(carphone, carphone), {"request": '{"steps": 99}'}, 422, "bad_steps"),
            (upload(carphone, carphone), {"request": '{"steps": 0}'}, 422, "invalid_request"),
        ]
        for files, data, status, code in bad:
            response = await client.post("/v1/transfers", files=files, data=data)
            assert 400 <= response.status_code < 500, response.text
            if status is not None:
                assert (response.status_code, response.json()["error"]["code"]) == (status, code)
        wrong_type = await client.post(
            "/v1/transfers", content=carphone, headers={"Content-Type": "video/mp4"}
        )
        assert wrong_type.status_code == 415
        assert (await client.get("/v1/jobs")).json()["jobs"] == []  # nothing bad became a job

        # the JSON form: base64 frames of the model's size
        size = app.state.engine.geo.image_size
        rng = np.random.default_rng(0)
        frames = rng.integers(0, 255, (6, size, size, 3), dtype=np.uint8)
        body = {
            "clip_a": {"frames": _png_frames(frames)},
            "clip_b": {"frames": _png_frames(frames[::-1])},
            "fps": 8,
        }
        response = await client.post("/v1/transfers", json=body)
        assert response.status_code == 202, response.text
        done = await wait_done(client, response.headers["location"])
        assert done["state"] == "succeeded" and done["params"]["fps"] == 8
        video = await client.get(f"{response.headers['location']}/result")
        assert len(decode_mp4(video.content)) == 6
        assert (await client.get("/livez")).status_code == 200
