"""Plan sessions through HTTP on the tiny exported model, the KV-cached rollout against the
uncached one, and the Python client against the same app (its retry on 429 included)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import io
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from exporters.runtime import HistoryKvPlannerStep, LoadedModel, controller_step, planner_step
from service.client import AsyncClient, LawmError, png_bytes
from service.inference.ahead import relative_error
from service.inference.queue import Priority
from service.inference.rollout import has_kv_cache, rollout_latents
from service.inference.sessions import shifted
from tests.integration.service.test_v1 import offline_observation
from tests.unit.service.media_files import png_b64
from training.planning import PlannerConfig, get_cost, plan

pytestmark = pytest.mark.anyio

SIZE = 32
# 3-d actions (the tiny controller's), a short horizon and few samples; one elite so that a warm
# step with one sample evaluates exactly its warm start.
SETTINGS: dict[str, Any] = {
    "action_low": [-1.0, -1.0, -1.0], "action_high": [1.0, 1.0, 1.0],
    "overrides": {"horizon": 3, "samples": 8, "elites": 1, "iterations": 1, "straight_line": False, "init_std": 0.5},
}


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


async def create(client: httpx.AsyncClient, **extra: Any) -> dict[str, Any]:
    response = await client.post("/v1/sessions", json={"goal": png_b64(image(0)), **SETTINGS, **extra})
    assert response.status_code == 201, response.text
    return response.json()


async def test_kv_cached_rollout_equals_the_uncached_one(served: tuple[httpx.AsyncClient, Any]) -> None:
    engine = served[1].state.engine
    assert has_kv_cache(engine)
    rng = np.random.default_rng(1)
    context = rng.standard_normal((3, *engine.geo.state_shape)).astype(np.float32)
    latents = rng.standard_normal((10, engine.geo.latent_dim)).astype(np.float32)  # 3 + 10 > 8: the window slides
    cached = await rollout_latents(engine, context, latents, Priority.INTERACTIVE, None, use_cache=True)
    uncached = await rollout_latents(engine, context, latents, Priority.INTERACTIVE, None, use_cache=False)
    assert cached.shape == (10, *engine.geo.state_shape)
    np.testing.assert_allclose(cached, uncached, atol=1e-4, rtol=1e-4)


async def test_session_lifecycle_and_warm_start(app_client: httpx.AsyncClient) -> None:
    info = await create(app_client, warm_samples=1, ttl_s=60)
    sid = info["session_id"]
    assert info["warm_planner"]["samples"] == 1 and info["planner"]["samples"] == 8 and info["steps"] == 0
    first = await app_client.post(f"/v1/sessions/{sid}/step", json={"frame": png_b64(image(1)), "step": 0})
    assert first.status_code == 200, first.text
    one = first.json()
    assert (one["step"], one["warm"], one["evaluations"]) == (0, False, 8)
    assert one["actions_now"] == one["actions"][:1] and len(one["actions"]) == 3
    # the warm step's only sample is its mean: the previous plan shifted by the executed action
    second = await app_client.post(f"/v1/sessions/{sid}/step", content=npy(image(2)),
                                   headers={"Content-Type": "application/x-npy"})
    two = second.json()
    assert (two["step"], two["warm"], two["evaluations"]) == (1, True, 1)
    np.testing.assert_allclose(two["actions"], shifted(np.asarray(one["actions"], np.float32), 1), atol=1e-6)
    third = await app_client.post(f"/v1/sessions/{sid}/step", json={"array": image(3).tolist()})
    assert third.json()["step"] == 2
    assert (await app_client.get(f"/v1/sessions/{sid}")).json()["steps"] == 3
    assert (await app_client.delete(f"/v1/sessions/{sid}")).status_code == 204
    gone = await app_client.post(f"/v1/sessions/{sid}/step", json={"frame": png_b64(image(1))})
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "unknown_session")


async def test_bad_frames_and_unknown_ids(app_client: httpx.AsyncClient) -> None:
    sid = (await create(app_client))["session_id"]
    step = f"/v1/sessions/{sid}/step"
    cases = [
        ({"json": {"frame": png_b64(np.zeros((16, 16, 3), np.uint8))}}, "wrong_image_size"),
        ({"json": {"array": np.zeros((SIZE, SIZE, 4), int).tolist()}}, "invalid_image"),
        ({"json": {"array": [[0.5] * 3] * SIZE}}, "invalid_frame"),
        ({"json": {"array": np.full((SIZE, SIZE, 3), 300).tolist()}}, "invalid_frame"),
        ({"content": b"not an array", "headers": {"Content-Type": "application/x-npy"}}, "invalid_frame"),
        ({"content": npy(np.zeros((SIZE, SIZE, 3), np.float32)), "headers": {"Content-Type": "application/x-npy"}},
         "invalid_frame"),
        ({"json": {"frame": png_b64(image(1)), "array": image(1).tolist()}}, "invalid_request"),
    ]
    for kwargs, code in cases:
        response = await app_client.post(step, **kwargs)
        assert (response.status_code, response.json()["error"]["code"]) == (422, code), (code, response.text)
        assert response.json()["error"]["message"]
    # a refused frame consumed nothing: the session is still at step 0
    assert (await app_client.get(f"/v1/sessions/{sid}")).json()["steps"] == 0
    upload = await app_client.post(step, files={"frame": ("f.png", base64.b64decode(png_b64(image(4))), "image/png")})
    assert upload.status_code == 200 and upload.json()["step"] == 0
    # the documented form: the frame as a file, its step number in the `request` field
    numbered = {"files": {"frame": ("f.png", base64.b64decode(png_b64(image(5))), "image/png")}}
    wrong = await app_client.post(step, data={"request": '{"step": 3}'}, **numbered)
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (409, "step_out_of_order")
    upload = await app_client.post(step, data={"request": '{"step": 1}'}, **numbered)
    assert upload.status_code == 200 and upload.json()["step"] == 1
    out_of_order = await app_client.post(step, json={"frame": png_b64(image(1)), "step": 5})
    assert (out_of_order.status_code, out_of_order.json()["error"]["code"]) == (409, "step_out_of_order")
    unknown = await app_client.post("/v1/sessions/sess-nope/step", json={"frame": png_b64(image(1))})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "unknown_session")
    assert (await app_client.delete("/v1/sessions/sess-nope")).status_code == 404
    bad = await app_client.post("/v1/sessions", json={"goal_id": "goal-missing", **SETTINGS})
    assert bad.status_code == 404
    too_long = await app_client.post("/v1/sessions", json={"goal": png_b64(image(0)), "ttl_s": 1e9, **SETTINGS})
    assert (too_long.status_code, too_long.json()["error"]["code"]) == (422, "ttl_too_long")
    await app_client.delete(f"/v1/sessions/{sid}")


async def test_concurrent_steps_count_and_ttl(served: tuple[httpx.AsyncClient, Any]) -> None:
    client, app = served
    store = app.state.sessions
    sid = (await create(client))["session_id"]
    first = asyncio.create_task(client.post(f"/v1/sessions/{sid}/step", json={"frame": png_b64(image(1))}))
    while not store.sessions[sid].busy:  # the first step holds the session
        await asyncio.sleep(0.001)
    second = await client.post(f"/v1/sessions/{sid}/step", json={"frame": png_b64(image(2))})
    assert (second.status_code, second.json()["error"]["code"]) == (409, "session_busy")
    assert (await first).status_code == 200

    store.max_sessions = len(store)  # full
    try:
        full = await client.post("/v1/sessions", json={"goal": png_b64(image(0)), **SETTINGS})
        assert (full.status_code, full.json()["error"]["code"]) == (429, "too_many_sessions")
        assert full.headers["Retry-After"] == "1"
    finally:
        store.max_sessions = 64
    real = store.clock
    store.clock = lambda: real() + 10_000  # every session is past its TTL
    try:
        expired = await client.get(f"/v1/sessions/{sid}")
        assert (expired.status_code, expired.json()["error"]["code"]) == (404, "unknown_session")
        assert len(store) == 0
    finally:
        store.clock = real


async def test_session_steps_queue_above_plans(served: tuple[httpx.AsyncClient, Any]) -> None:
    """Every engine call of a session step (encode, controller, world model) is queued at
    Priority.SESSION, and a one-off plan's at Priority.PLAN: a control loop is served first."""
    client, app = served
    engine = app.state.engine
    seen: list[tuple[str, Priority]] = []
    real_run = engine.run

    async def recording_run(component: str, inputs: dict[str, np.ndarray], priority: Priority = Priority.INTERACTIVE,
                            deadline: float | None = None) -> dict[str, np.ndarray]:
        seen.append((component, priority))
        return await real_run(component, inputs, priority, deadline)

    engine.run = recording_run
    try:
        sid = (await create(client))["session_id"]
        seen.clear()  # the goal's encoding is not a step
        assert (await client.post(f"/v1/sessions/{sid}/step", json={"frame": png_b64(image(1))})).status_code == 200
        step_calls = list(seen)
        seen.clear()
        planned = await client.post("/v1/plan", json={"observation": png_b64(image(1)), "goal": png_b64(image(0)), **SETTINGS})
        assert planned.status_code == 200, planned.text
    finally:
        engine.run = real_run
    assert {c for c, _ in step_calls} >= {"encoder", "controller"}
    assert {p for _, p in step_calls} == {Priority.SESSION}
    assert {p for _, p in seen} == {Priority.PLAN}


async def test_client_sessions_plans_and_retry_on_429(served: tuple[httpx.AsyncClient, Any]) -> None:
    http, app = served
    store = app.state.sessions
    waits: list[float] = []
    blocker = (await create(http))["session_id"]

    async def sleep(seconds: float) -> None:  # the wait the server asked for; meanwhile a session ends
        waits.append(seconds)
        store.delete(blocker)

    lawm = AsyncClient(http=http, sleep=sleep)
    store.max_sessions = len(store)
    try:
        session = await lawm.create_session(goal=png_bytes(image(0)), **SETTINGS)
    finally:
        store.max_sessions = 64
    assert waits == [1.0] and session.session_id.startswith("sess-") and session.steps == 0
    step = await lawm.step(session.session_id, image(1), step=0)
    assert step.actions_now.shape == (1, 3) and step.actions.shape == (3, 3) and not step.warm
    assert (await lawm.step(session.session_id, image(2))).warm
    await lawm.end_session(session.session_id)
    with pytest.raises(LawmError) as err:
        await lawm.step(session.session_id, image(2))
    assert (err.value.status, err.value.code) == (404, "unknown_session")
    goal = await lawm.register_goal(image(0))
    assert goal == session.goal_id  # the same image gives the same id
    plan = await lawm.plan(image(1), goal_id=goal, **SETTINGS)
    assert plan.actions.shape == (3, 3) and plan.goal_id == goal

    lawm_no_retry = AsyncClient(http=http, retries=0, sleep=sleep)
    store.max_sessions = 0
    try:
        with pytest.raises(LawmError) as err:
            await lawm_no_retry.create_session(goal_id=goal, **SETTINGS)
        assert (err.value.status, err.value.retry_after_s) == (429, 1.0)
    finally:
        store.max_sessions = 64


async def test_history_context_plans_as_the_offline_planner(
    served: tuple[httpx.AsyncClient, Any], offline_model: LoadedModel
) -> None:
    client, _ = served
    info = await create(client, history_context=True)
    assert info["history_context"] is True and info["planner"]["context"] == info["warm_planner"]["context"] == "full"
    refused = await client.post("/v1/sessions", json={"goal": png_b64(image(0)), **SETTINGS, "history_context": True,
                                                      "overrides": {**SETTINGS["overrides"], "context": "one-frame"}})
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "invalid_planner_settings")
    step = f"/v1/sessions/{info['session_id']}/step"
    frames = [image(11), image(12)]
    answers = [(await client.post(step, json={"frame": png_b64(f)})).json() for f in frames]

    # offline: the same encoder, IDM, controller and KV world model, the same settings and seeds
    goal = torch.from_numpy(offline_observation(offline_model, image(0)))
    s0, s1 = (offline_observation(offline_model, f) for f in frames)
    cold = PlannerConfig(**info["planner"])
    first = plan(planner_step(offline_model, context="full"), get_cost(cold.cost), torch.from_numpy(s0), goal, cold)
    np.testing.assert_allclose(answers[0]["actions"], first.actions.numpy(), atol=1e-5)
    warm = dataclasses.replace(PlannerConfig(**info["warm_planner"]), seed=info["warm_planner"]["seed"] + 1)
    latent = offline_model.components["idm"].run({"states": np.stack([s0, s1])[None]})["latents"][:, 0]  # [1, Z]
    with_history = HistoryKvPlannerStep(offline_model, s0[None], latent)
    second = plan(with_history, get_cost(warm.cost), torch.from_numpy(s1), goal, warm,
                  initial_mean=torch.from_numpy(shifted(first.actions.numpy(), 1)))
    np.testing.assert_allclose(answers[1]["actions"], second.actions.numpy(), atol=1e-5)
    assert answers[1]["cost"] == pytest.approx(second.cost, rel=1e-4)


async def test_a_step_past_its_control_period_answers_the_shifted_plan(served: tuple[httpx.AsyncClient, Any]) -> None:
    client, app = served
    info = await create(client, control_period_ms=60_000)
    step = f"/v1/sessions/{info['session_id']}/step"
    first = (await client.post(step, json={"frame": png_b64(image(1))})).json()
    assert first["deadline_hit"] is False
    app.state.sessions.sessions[info["session_id"]].spec.control_period_s = 1e-9  # no time at all
    late = await client.post(step, json={"frame": png_b64(image(2))})
    assert late.status_code == 200, late.text
    body = late.json()
    assert (body["deadline_hit"], body["cost"], body["evaluations"], body["warm"]) == (True, None, 0, True)
    np.testing.assert_allclose(body["actions"], shifted(np.asarray(first["actions"], np.float32), 1), atol=1e-6)
    await client.delete(step.removesuffix("/step"))


async def test_planning_ahead_answers_the_plan_searched_from_the_predicted_state(
    served: tuple[httpx.AsyncClient, Any], offline_model: LoadedModel
) -> None:
    client, app = served
    store = app.state.sessions
    info = await create(client, plan_ahead=True, ahead_tolerance=10.0)
    assert info["plan_ahead"] is True
    sid = info["session_id"]
    step = f"/v1/sessions/{sid}/step"
    one = (await client.post(step, json={"frame": png_b64(image(11))})).json()
    assert (one["ahead"], one["ahead_error"]) == (False, None)
    task = store.sessions[sid].ahead
    assert task is not None  # searching while the robot moves
    while not task.done():
        await asyncio.sleep(0.01)
    two = (await client.post(step, json={"frame": png_b64(image(12))})).json()
    assert two["ahead"] is True and two["warm"] is True and two["ahead_error"] > 0
    assert two["timing"]["plan_s"] == 0.0 and two["timing"]["ahead_s"] > 0  # searched in the previous period

    # offline: predict the state the executed action leads to, then the warm search from there
    call = lambda component, inputs: offline_model.components[component].run(inputs)  # noqa: E731
    s0, s1 = (offline_observation(offline_model, f) for f in (image(11), image(12)))
    predicted, _ = controller_step(call, s0[None], np.asarray(one["actions_now"], np.float32))  # [1, N, D]
    goal = torch.from_numpy(offline_observation(offline_model, image(0)))
    warm = dataclasses.replace(PlannerConfig(**info["warm_planner"]), seed=info["warm_planner"]["seed"] + 1)
    expected = plan(planner_step(offline_model, context=warm.context), get_cost(warm.cost), torch.from_numpy(predicted[0]),
                    goal, warm, initial_mean=torch.from_numpy(shifted(np.asarray(one["actions"], np.float32), 1)))
    np.testing.assert_allclose(two["actions"], expected.actions.numpy(), atol=1e-5)
    assert two["ahead_error"] == pytest.approx(relative_error(s1, predicted[0]), rel=1e-4)

    # the next search ahead started from the real frame's state; ending the session cancels it
    pending = store.sessions[sid].ahead
    assert pending is not None and pending is not task
    assert (await client.delete(f"/v1/sessions/{sid}")).status_code == 204
    with contextlib.suppress(asyncio.CancelledError):
        await pending
    assert pending.done()


async def test_a_prediction_beyond_the_tolerance_is_not_used(served: tuple[httpx.AsyncClient, Any]) -> None:
    client, app = served
    info = await create(client, plan_ahead=True, ahead_tolerance=0.0)
    step = f"/v1/sessions/{info['session_id']}/step"
    await client.post(step, json={"frame": png_b64(image(11))})
    task = app.state.sessions.sessions[info["session_id"]].ahead
    while not task.done():
        await asyncio.sleep(0.01)
    two = (await client.post(step, json={"frame": png_b64(image(12))})).json()
    assert two["ahead"] is False and two["warm"] is True and two["ahead_error"] > 0  # searched from the real state
    bad = await client.post("/v1/sessions", json={"goal": png_b64(image(0)), "ahead_tolerance": -1, **SETTINGS})
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_request")
    await client.delete(f"/v1/sessions/{info['session_id']}")


async def test_the_cold_step_can_have_its_own_deadline(served: tuple[httpx.AsyncClient, Any]) -> None:
    """A control period far shorter than a cold plan: without `cold_deadline_ms` the first step has
    nothing to fall back on (504); with it the first step plans in full and later steps keep the
    period (here: past it at once, so they answer the previous plan shifted)."""
    client, _ = served
    tight = await create(client, control_period_ms=0.001)
    first = await client.post(f"/v1/sessions/{tight['session_id']}/step", json={"frame": png_b64(image(1))})
    assert (first.status_code, first.json()["error"]["code"]) == (504, "deadline_exceeded")

    info = await create(client, control_period_ms=0.001, cold_deadline_ms=60_000)
    assert info["cold_deadline_ms"] == 60_000 and info["control_period_ms"] == 0.001
    step = f"/v1/sessions/{info['session_id']}/step"
    one = await client.post(step, json={"frame": png_b64(image(1))})
    assert one.status_code == 200 and one.json()["deadline_hit"] is False and one.json()["evaluations"] == 8
    two = (await client.post(step, json={"frame": png_b64(image(2))})).json()
    assert two["deadline_hit"] is True and two["evaluations"] == 0
    np.testing.assert_allclose(two["actions"], shifted(np.asarray(one.json()["actions"], np.float32), 1), atol=1e-6)
    for sid in (tight["session_id"], info["session_id"]):
        await client.delete(f"/v1/sessions/{sid}")
