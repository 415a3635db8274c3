"""Every v1 endpoint on the real sample clips, through HTTP (httpx against the app and its lifespan),
checked against the same exported model run offline, and against the torch model it came from."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
import torch

from exporters.runtime import LoadedModel, planner_step
from exporters.torch_runtime import build_model
from tests.service_fixtures import TINY_NAME, TINY_VERSION
from tests.unit.service.media_files import png_b64
from training.data.samples import sample_clips
from training.data.video import decode_all
from training.models.world_model import autoregressive_rollout
from training.planning import get_cost, plan, preset
from training.precision import cpu_bf16_support

pytestmark = pytest.mark.anyio

FPS, SIZE = 4.0, 32


@pytest.fixture(scope="module")
def carphone() -> tuple[Path, np.ndarray]:
    path = sample_clips()["carphone_pristine"]
    return path, decode_all(path, FPS, SIZE)  # [17, 32, 32, 3]: what the server must sample


@pytest.fixture(scope="module")
def torch_model(tiny_model_repo: Path) -> Any:
    model, _ = build_model(tiny_model_repo / TINY_NAME / str(TINY_VERSION) / "checkpoint")
    return model


def to_video(frames: np.ndarray) -> np.ndarray:
    """uint8 `[T, H, W, 3]` -> float32 `[1, T, 3, H, W]` in [0, 1]."""
    return (frames.astype(np.float32) / 255.0).transpose(0, 3, 1, 2)[None]


def offline_states(model: LoadedModel, frames: np.ndarray) -> np.ndarray:
    return model.components["encoder"].run({"video": to_video(frames)})["states"][0]  # [S, N, D]


def offline_observation(model: LoadedModel, frame: np.ndarray) -> np.ndarray:
    return offline_states(model, np.repeat(frame[None], 2, axis=0))[0]  # [N, D]


def metric(text: str, series: str, **labels: str) -> float:
    """The sum of a Prometheus series over the samples carrying `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{series}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            total += float(m.group(2))
    return total


# ----------------------------------------------------------------------------- models, health, docs
async def test_models_health_and_docs(app_client: httpx.AsyncClient) -> None:
    assert (await app_client.get("/livez")).json() == {"live": True}
    assert (await app_client.get("/readyz")).json() == {"ready": True, "state": "ready"}
    (info,) = (await app_client.get("/v1/models")).json()["models"]
    assert (info["name"], info["version"], info["runtime"], info["ready"]) == (TINY_NAME, TINY_VERSION, "onnxruntime", True)
    assert (info["image_size"], info["fps"], info["latent_dim"], info["action_dim"]) == (SIZE, FPS, 16, 3)
    assert set(info["components"]) == {
        "encoder", "idm", "world_model", "world_model_step", "world_model_prefill", "world_model_kv_step", "decoder",
        "controller",
    }
    assert info["components"]["encoder"]["warm_batch_sizes"] == [1, 2, 4, 8, 16, 32]
    assert info["components"]["world_model_step"]["max_batch_size"] == 256
    # onnxruntime runs the graphs as exported (fp32 here); the CPU's bf16 is detected, not assumed
    assert info["precision"] == {"components": dict.fromkeys(info["components"], "fp32"), "source": "export",
                                 "cpu_bf16": cpu_bf16_support().kind}
    schema = (await app_client.get("/openapi.json")).json()
    body = schema["paths"]["/v1/latent-actions"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data", "video/mp4"} <= set(body)
    assert "LatentActionsJson" in schema["components"]["schemas"] and "PlanRequest" in schema["components"]["schemas"]
    assert (await app_client.get("/docs")).status_code == 200


# ----------------------------------------------------------------------------- latent actions
async def test_latent_actions_of_a_real_clip_match_the_offline_model(
    app_client: httpx.AsyncClient, carphone: tuple[Path, np.ndarray], offline_model: LoadedModel, torch_model: Any
) -> None:
    path, frames = carphone
    response = await app_client.post("/v1/latent-actions", files={"file": (path.name, path.read_bytes(), "video/mp4")})
    assert response.status_code == 200, response.text
    body = response.json()
    served = np.asarray(body["latents"], dtype=np.float32)
    assert served.shape == (7, 16) and body["frames_used"] == 16 and body["steps"] == 7
    assert body["start_s"][:2] == [0.0, 0.5] and body["end_s"][-1] == 3.5  # state 7 starts at frame 14
    assert body["source"]["width"] == 176 and body["source"]["codec"] == "h264"

    states = offline_states(offline_model, frames[:16])  # the whole clip at once, not tubelet by tubelet
    offline = offline_model.components["idm"].run({"states": states[None]})["latents"][0]
    np.testing.assert_allclose(served, offline, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        reference = torch_model.latent_actions(torch_model.encode(torch.from_numpy(frames[:16]).permute(0, 3, 1, 2)[None]))
    np.testing.assert_allclose(served, reference[0].numpy(), rtol=1e-3, atol=1e-4)

    raw = await app_client.post("/v1/latent-actions", content=path.read_bytes(),
                                headers={"content-type": "video/mp4", "accept": "application/x-npy"})
    assert raw.headers["content-type"] == "application/x-npy"
    np.testing.assert_array_equal(np.load(io.BytesIO(raw.content), allow_pickle=False), served)

    as_json = await app_client.post("/v1/latent-actions", json={"frames": [png_b64(f) for f in frames[:16]], "fps": 8})
    assert as_json.status_code == 200, as_json.text
    np.testing.assert_array_equal(np.asarray(as_json.json()["latents"], dtype=np.float32), served)
    assert as_json.json()["end_s"][0] == 0.25  # timestamps at the client's fps


# ----------------------------------------------------------------------------- rollouts
async def test_rollout_of_a_real_clip_with_another_clips_latents(
    app_client: httpx.AsyncClient, carphone: tuple[Path, np.ndarray], offline_model: LoadedModel, torch_model: Any
) -> None:
    bikes = sample_clips()["bikes"]
    latents = (await app_client.post("/v1/latent-actions", files={"file": ("bikes.mp4", bikes.read_bytes())})).json()
    applied = latents["latents"][:3]  # bikes' first 3 actions, applied to carphone
    path, frames = carphone
    options = {"latents": applied, "decode": "mp4"}
    response = await app_client.post(
        "/v1/rollouts", files={"context": (path.name, path.read_bytes(), "video/mp4")},
        data={"request": json.dumps(options)},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    served = np.asarray(body["states"], dtype=np.float32)
    assert served.shape == (3, 16, 32) and body["context_states"] == 8 and body["driven_by"] == "latents"

    with torch.no_grad():  # the reference: torch's own autoregressive rollout from the same context
        video = torch.from_numpy(frames[:16]).permute(0, 3, 1, 2)[None]
        context = torch_model.encode(video)  # [1, 8, N, D]
        context_latents = torch_model.latent_actions(context)
        expected = autoregressive_rollout(torch_model.world_model, context, context_latents, torch.tensor([applied]))
    np.testing.assert_allclose(served, expected[0].numpy(), rtol=1e-3, atol=2e-4)

    assert body["video_content_type"] == "video/mp4" and body["video_frames"] == 8  # (1 + 3) states x 2 frames
    with av.open(io.BytesIO(base64.b64decode(body["video"]))) as container:
        decoded = list(container.decode(video=0))
    assert len(decoded) == 8 and (decoded[0].width, decoded[0].height) == (SIZE, SIZE)


async def test_rollout_with_real_actions_is_the_planners_step(
    app_client: httpx.AsyncClient, carphone: tuple[Path, np.ndarray], offline_model: LoadedModel
) -> None:
    _, frames = carphone
    actions = [[0.2, 0.0, 0.1], [0.2, 0.05, 0.0], [0.0, -0.1, -0.3]]
    response = await app_client.post(
        "/v1/rollouts", json={"frames": [png_b64(frames[0])], "actions": actions, "decode": "png"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    step = planner_step(offline_model)
    state = torch.from_numpy(offline_observation(offline_model, frames[0]))[None]
    expected = []
    for a in actions:
        state = step(state, torch.tensor([a]))
        expected.append(state[0].numpy())
    np.testing.assert_allclose(np.asarray(body["states"], dtype=np.float32), np.stack(expected), rtol=1e-4, atol=1e-5)
    assert body["context_states"] == 1 and len(body["latents"]) == 3
    strip = av.open(io.BytesIO(base64.b64decode(body["video"])))
    frame = next(strip.decode(video=0))
    assert (frame.width, frame.height) == (8 * SIZE, SIZE)  # (1 + 3) states x 2 frames side by side


# ----------------------------------------------------------------------------- goals and plans
async def test_goal_and_plan_match_the_offline_planner(
    app_client: httpx.AsyncClient, carphone: tuple[Path, np.ndarray], offline_model: LoadedModel
) -> None:
    _, frames = carphone
    goal = await app_client.post("/v1/goals", json={"image": png_b64(frames[12])})
    assert goal.status_code == 200, goal.text
    goal_id = goal.json()["goal_id"]
    again = await app_client.post("/v1/goals", files={"image": ("g.png", base64.b64decode(png_b64(frames[12])))})
    assert again.json()["goal_id"] == goal_id  # the same picture, the same id, whatever the form

    start = torch.from_numpy(offline_observation(offline_model, frames[0]))
    target = torch.from_numpy(offline_observation(offline_model, frames[12]))
    # the default (one-frame) and full context (each candidate keeps its context, through the KV components)
    for context in (None, "full"):
        overrides = {"horizon": 3, "samples": 24, "elites": 4, "iterations": 2, "seed": 5}
        if context is not None:
            overrides["context"] = context
        request = {"observation": png_b64(frames[0]), "goal_id": goal_id, "overrides": overrides}
        response = await app_client.post("/v1/plan", json=request)
        assert response.status_code == 200, response.text
        body = response.json()
        cfg = preset("recon", **overrides)  # the preset made for 3-d actions
        assert cfg.context == (context or "one-frame")
        expected = plan(planner_step(offline_model, context=cfg.context), get_cost(cfg.cost), start, target, cfg)
        np.testing.assert_allclose(np.asarray(body["actions"]), expected.actions.numpy(), rtol=1e-5, atol=1e-6)
    assert body["cost"] == pytest.approx(expected.cost, rel=1e-4)
    assert (body["iterations"], body["evaluations"], body["deadline_hit"]) == (2, 48, False)
    assert body["planner"]["samples"] == 24 and body["planner"]["straight_line"] is True
    timing = body["timing"]
    assert 0 < timing["controller_s"] + timing["world_model_s"] <= timing["step_s"] + 1e-3
    assert timing["plan_s"] <= timing["total_s"]

    inline = await app_client.post("/v1/plan", json={**request, "goal_id": None, "goal": png_b64(frames[12])})
    assert inline.json()["goal_id"] == goal_id and inline.json()["actions"] == body["actions"]

    assert (await app_client.delete(f"/v1/goals/{goal_id}")).status_code == 204
    gone = await app_client.post("/v1/plan", json=request)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "unknown_goal"


async def test_concurrent_plans_share_batches(app_client: httpx.AsyncClient, carphone: tuple[Path, np.ndarray]) -> None:
    _, frames = carphone
    before = (await app_client.get("/metrics")).text
    goal = png_b64(frames[8])

    async def one(seed: int) -> dict[str, Any]:
        overrides = {"horizon": 2, "samples": 16, "elites": 4, "iterations": 3, "seed": seed}
        response = await app_client.post("/v1/plan", json={"observation": png_b64(frames[seed]), "goal": goal,
                                                           "overrides": overrides})
        assert response.status_code == 200, response.text
        return response.json()

    results = await asyncio.gather(*(one(seed) for seed in range(4)))
    assert all(len(r["actions"]) == 2 for r in results)
    after = (await app_client.get("/metrics")).text
    # one-frame planning (the default): every step of every candidate is one world_model_step row
    world_model = ("world_model_step",)
    rows = sum(metric(after, "lawm_batch_size_sum", component=c) - metric(before, "lawm_batch_size_sum", component=c)
               for c in world_model)
    batches = sum(metric(after, "lawm_batch_size_count", component=c)
                  - metric(before, "lawm_batch_size_count", component=c) for c in world_model)
    assert rows == 4 * 3 * 2 * 16  # every candidate of every step of every plan was computed once
    assert rows / batches > 16  # and plans met in the same batches


# ----------------------------------------------------------------------------- metrics and request ids
async def test_metrics_and_request_ids(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/v1/models", headers={"X-Request-ID": "robot-1"})
    assert response.headers["x-request-id"] == "robot-1"
    text = (await app_client.get("/metrics")).text
    assert metric(text, "lawm_requests_total", endpoint="/v1/models", method="GET", status="200") >= 1
    assert metric(text, "lawm_model_info", name=TINY_NAME, version=str(TINY_VERSION), runtime="onnxruntime") == 1
    assert metric(text, "lawm_batch_size_count", component="encoder") >= 1
    assert "lawm_queue_duration_seconds_bucket" in text and "lawm_compute_duration_seconds_bucket" in text
