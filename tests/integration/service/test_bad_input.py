"""Bad input, each answered 4xx with the JSON error body, and the server healthy afterwards."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.integration.service.conftest import running_app, service_settings
from tests.unit.service.media_files import (
    audio_only_mp4,
    clip,
    gif_with_screen,
    mp4,
    png_b64,
    random_bytes,
    truncated,
)
from training.data.samples import sample_clips

pytestmark = pytest.mark.anyio

FRAME = png_b64(clip(1, size=32)[0])
Call = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


def upload(data: bytes, content_type: str = "video/mp4") -> Call:
    return lambda c: c.post("/v1/latent-actions", content=data, headers={"content-type": content_type})


def rollout(**body: object) -> Call:
    return lambda c: c.post("/v1/rollouts", json={"frames": [FRAME, FRAME], **body})


def raw_json(path: str, text: str) -> Call:
    return lambda c: c.post(path, content=text.encode(), headers={"content-type": "application/json"})


def plan(**body: object) -> Call:
    return lambda c: c.post("/v1/plan", json={"observation": FRAME, "goal": FRAME, **body})


CARPHONE = sample_clips()["carphone_pristine"].read_bytes()
NAN_LATENTS = json.dumps({"frames": [FRAME, FRAME], "latents": [[float("nan")] * 16]})  # json writes NaN

CASES: list[tuple[str, Call, int, str]] = [
    ("zero bytes", upload(b""), 400, "empty_upload"),
    ("random bytes", upload(random_bytes()), 422, "unreadable_media"),
    ("truncated mp4", upload(truncated(CARPHONE)), 422, "unreadable_media"),
    ("audio-only file", upload(audio_only_mp4()), 422, "no_video_stream"),
    ("10000x10000 frame header", upload(gif_with_screen(10_000, 10_000), "image/gif"), 413, "frame_too_large"),
    ("more frames than allowed", upload(mp4(80, fps=4.0)), 413, "too_many_frames"),  # 20 s -> 80 > 64 frames
    ("wrong content type", upload(b"hello", "text/plain"), 415, "unsupported_media_type"),
    ("form without the options", lambda c: c.post("/v1/rollouts", files={"context": ("a.mp4", CARPHONE)}), 422,
     "invalid_request"),
    ("NaN latents", raw_json("/v1/rollouts", NAN_LATENTS), 422, "invalid_request"),
    ("infinite actions", raw_json("/v1/rollouts", NAN_LATENTS.replace("latents", "actions").replace("NaN", "Infinity")),
     422, "invalid_request"),
    ("latents of the wrong size", rollout(latents=[[0.0] * 5]), 422, "wrong_shape"),
    ("ragged latents", rollout(latents=[[0.0] * 16, [0.0] * 15]), 422, "invalid_request"),
    ("actions of the wrong dimension", rollout(actions=[[0.1, 0.2]]), 422, "wrong_shape"),
    ("both latents and actions", rollout(latents=[[0.0] * 16], actions=[[0.0] * 3]), 422, "invalid_request"),
    ("too many rollout steps", rollout(latents=[[0.0] * 16] * 65), 422, "too_many_steps"),
    ("goal image of another size", lambda c: c.post("/v1/goals", json={"image": png_b64(clip(1, size=48)[0])}), 422,
     "wrong_image_size"),
    ("goal given as a URL", lambda c: c.post("/v1/goals", json={"image": "https://example.com/goal.png"}), 422,
     "urls_not_fetched"),
    ("unknown goal id", plan(goal=None, goal_id="goal-0000"), 404, "unknown_goal"),
    ("horizon out of range", plan(overrides={"horizon": 100}), 422, "invalid_planner_settings"),
    ("samples out of range", plan(overrides={"samples": 0}), 422, "invalid_planner_settings"),
    ("bounds of the wrong dimension", plan(action_low=[-1, -1], action_high=[1, 1]), 422, "wrong_action_dim"),
    ("plan as a form", lambda c: c.post("/v1/plan", data={"observation": FRAME}), 415, "unsupported_media_type"),
    ("oversized JSON", lambda c: c.post("/v1/latent-actions", json={"frames": ["A" * (1 << 20)]}), 413,
     "payload_too_large"),
    ("bad API key", lambda c: c.get("/v1/models", headers={"Authorization": "Bearer not-the-key-at-all"}), 401,
     "unauthorized"),
    ("unknown path", lambda c: c.get("/v1/nothing"), 404, "not_found"),
]


@pytest.fixture(scope="module")
async def client(tiny_model_repo: Path):  # noqa: ANN201
    async with running_app(service_settings(tiny_model_repo)) as (client, _):
        yield client


@pytest.mark.parametrize(("name", "call", "status", "code"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_is_a_4xx_json_error_and_the_server_stays_healthy(
    client: httpx.AsyncClient, name: str, call: Call, status: int, code: str
) -> None:
    response = await call(client)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"], error
    assert error["request_id"] == response.headers["x-request-id"]

    assert (await client.get("/readyz")).status_code == 200
    ok = await client.post("/v1/latent-actions", json={"frames": [FRAME] * 4})
    assert ok.status_code == 200 and np.asarray(ok.json()["latents"]).shape == (1, 16)


async def test_errors_name_the_field_and_the_expected_size(client: httpx.AsyncClient) -> None:
    assert "latents has 5 values per step; the model takes 16" in (await rollout(latents=[[0.0] * 5])(client)).text
    assert "32x32" in (await client.post("/v1/goals", json={"image": png_b64(clip(1, size=48)[0])})).text
    assert "overrides.horizon" in (await plan(overrides={"horizon": 100})(client)).json()["error"]["message"]
    nan = (await raw_json("/v1/rollouts", NAN_LATENTS)(client)).json()["error"]
    assert nan["fields"][0]["field"].startswith("latents[0][0]")


async def test_a_model_without_a_controller_refuses_actions_and_plans(tmp_path: Path) -> None:
    from tests.unit.exporters.tiny import tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "no-controller", controller=None)
    settings = service_settings(tmp_path, checkpoint=checkpoint, runtime="torch", api_keys=[])
    async with running_app(settings) as (client, _):
        for response in (await plan()(client), await rollout(actions=[[0.1, 0.0, 0.0]])(client)):
            assert response.status_code == 409, response.text
            assert response.json()["error"]["code"] == "no_controller"
            assert "lawm train controller" in response.json()["error"]["hint"]
        models = (await client.get("/v1/models")).json()["models"][0]
        assert models["action_dim"] is None and "controller" not in models["components"]
        assert (await rollout(latents=[[0.0] * 16])(client)).status_code == 200
