"""Plan sessions over HTTP: `POST /v1/sessions`, `POST /v1/sessions/{id}/step`, `GET` and `DELETE`.

A control loop creates a session once (goal, planner settings, action bounds, control period, TTL)
and then sends one frame per step; the answer holds the action(s) to execute now, the whole plan,
its predicted cost and where the time went. What a session keeps and why it lives on one replica:
`service.inference.sessions`.

A step's frame comes as JSON (`{"frame": base64 PNG/JPEG}` or `{"array": [[[r, g, b], ...]]}`, uint8
`[H, W, 3]`), a multipart upload (`frame`), a raw `image/png`/`image/jpeg` body, or a raw
`application/x-npy` body holding a uint8 `[H, W, 3]` array; always the model's size, never resized.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, model_validator

from service.deps import EngineDep, GoalsDep, PlanSlotsDep, SettingsDep
from service.errors import ApiError, answer_for, error_body, validation_message
from service.inference.ahead import AheadPlan, plan_ahead, ready_ahead, relative_error
from service.inference.engine import Engine
from service.inference.errors import DeadlineExceeded, InferenceError
from service.inference.goals import goal_id
from service.inference.planner import PlanSlots, finite_or_none, planner_config, run_plan
from service.inference.queue import Priority
from service.inference.sessions import (
    PlanSession,
    SessionSpec,
    SessionStore,
    UnknownSession,
    shifted,
    warm_config,
)
from service.inputs import NPY, cancel_on_disconnect, media_type, parse_json, read_body
from service.media import MediaLimits, b64decode_field, check_image_size, model_sized_image
from service.openapi import errors
from service.routes.v1 import limits_of, model_key, model_ref, require_json
from service.schemas import Base64Image, Matrix, ModelRef, RequestBody, Vector, openapi_body
from training.planning import PlannerConfig

router = APIRouter(prefix="/v1", tags=["sessions"])


def get_sessions(request: Request) -> SessionStore:
    return request.app.state.sessions


SessionsDep = Annotated[SessionStore, Depends(get_sessions)]


# ----------------------------------------------------------------------------- schemas
class SessionRequest(RequestBody):
    goal_id: str | None = Field(None, max_length=128, description="from POST /v1/goals")
    goal: Base64Image | None = Field(None, description="a goal image, instead of `goal_id`")
    preset: str | None = Field(None, description="planner protocol (droid, recon); default: the one matching "
                               "the controller's action size")
    action_low: Vector | None = Field(None, description="lower action bound per dim")
    action_high: Vector | None = Field(None, description="upper action bound per dim")
    overrides: dict[str, Any] = Field(default_factory=dict, description="planner settings of the first (cold) step")
    warm_samples: int | None = Field(None, ge=1, le=4096,
                                     description="samples of warm steps (default: a quarter, at least the elites)")
    warm_iterations: int | None = Field(None, ge=1, le=100,
                                        description="iterations of warm steps (default: a third, at least 1)")
    control_period_ms: float | None = Field(None, gt=0, le=600_000,
                                            description="each step answers within this with the best plan so far")
    cold_deadline_ms: float | None = Field(
        None, gt=0, le=600_000, description="the first (cold) step's deadline instead of `control_period_ms`: a "
        "cold plan costs several warm steps, and a robot usually takes it before its loop starts")
    ttl_s: float | None = Field(None, gt=0, description="the session ends after this long unused")
    execute: int = Field(1, ge=1, le=64, description="actions the robot executes per step (the warm start "
                         "shifts the previous plan by this many)")
    history_context: bool = Field(
        False, description="plan with the session's earlier frames (and the IDM's latents between them) as "
        "the world model's context (implies context 'full'); meaningful when the control period matches the "
        "model's state period")
    plan_ahead: bool = Field(
        False, description="while the robot executes a step's actions, search the next step's plan from the "
        "world model's predicted state; the next step answers it at once when the real frame's state is within "
        "`ahead_tolerance` of the prediction, and searches from the real state otherwise")
    ahead_tolerance: float = Field(
        0.25, ge=0, le=10, description="largest relative state error ‖real − predicted‖ / ‖real‖ at which the "
        "plan made ahead is used (each step reports `ahead_error` to tune it)")

    @model_validator(mode="after")
    def _one_goal(self) -> SessionRequest:
        if (self.goal_id is None) == (self.goal is None):
            raise ValueError("give exactly one of `goal_id` (from POST /v1/goals) or `goal` (an image)")
        if (self.action_low is None) != (self.action_high is None):
            raise ValueError("give both `action_low` and `action_high`, or neither")
        return self


class SessionInfo(BaseModel):
    session_id: str
    model: ModelRef
    goal_id: str
    planner: dict[str, Any] = Field(description="settings of the first (cold) step")
    warm_planner: dict[str, Any] = Field(description="settings of later (warm-started) steps")
    control_period_ms: float | None
    cold_deadline_ms: float | None
    execute: int
    history_context: bool
    plan_ahead: bool
    ahead_tolerance: float
    ttl_s: float
    expires_in_s: float
    steps: int


class StepRequest(RequestBody):
    frame: Base64Image | None = Field(None, description="the newest camera frame, PNG or JPEG")
    array: list[Any] | None = Field(None, description="the newest frame as uint8 [H, W, 3] nested lists")
    step: int | None = Field(None, ge=0, description="this step's number (0, 1, ...); a mismatch is a 409")

    @model_validator(mode="after")
    def _one_frame(self) -> StepRequest:
        if (self.frame is None) == (self.array is None):
            raise ValueError("give exactly one of `frame` (base64 PNG/JPEG) or `array` (uint8 [H, W, 3])")
        return self


class StepOptions(RequestBody):
    """The `request` field of a multipart step, beside its `frame` file."""

    step: int | None = Field(None, ge=0, description="this step's number (0, 1, ...); a mismatch is a 409")


class StepResponse(BaseModel):
    session_id: str
    step: int
    warm: bool = Field(description="whether the search started from the previous plan")
    ahead: bool = Field(False, description="the answer is the plan searched ahead, from the predicted state")
    ahead_error: float | None = Field(
        None, description="relative error of the predicted state against this frame's (plan_ahead sessions)")
    actions_now: Matrix = Field(description="[execute, action_dim] the action(s) to execute now")
    actions: Matrix = Field(description="[horizon, action_dim] the whole plan")
    cost: float | None
    iterations: int
    evaluations: int
    deadline_hit: bool
    expires_in_s: float
    timing: dict[str, float] = Field(
        description="seconds: decode, encode, plan, controller, world_model, total; with an answer planned ahead, "
        "also ahead_wait (this step waiting for that search to end) and ahead (its own time, spent in the "
        "previous control period)")


def _config_json(cfg: PlannerConfig) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def _info(session: PlanSession, engine: Any, store: SessionStore) -> SessionInfo:
    spec = session.spec
    return SessionInfo(
        session_id=session.id, model=model_ref(engine), goal_id=spec.goal_id, planner=_config_json(spec.cold),
        warm_planner=_config_json(spec.warm),
        control_period_ms=None if spec.control_period_s is None else spec.control_period_s * 1000.0,
        cold_deadline_ms=None if spec.cold_deadline_s is None else spec.cold_deadline_s * 1000.0,
        execute=spec.execute, history_context=spec.history_context, plan_ahead=spec.plan_ahead,
        ahead_tolerance=spec.ahead_tolerance, ttl_s=spec.ttl_s, expires_in_s=max(0.0, session.expires_at - store.clock()),
        steps=session.steps,
    )


# ----------------------------------------------------------------------------- frames
def frame_from_array(array: Any, limits: MediaLimits, what: str) -> np.ndarray:
    """Nested lists or a decoded .npy -> uint8 `[size, size, 3]`, or a 422 saying what is wrong."""
    try:
        image = np.asarray(array)
    except ValueError as err:  # ragged lists
        raise ApiError(422, "invalid_frame", f"{what} is not a rectangular array: {err}",
                       f"send uint8 [{limits.size}, {limits.size}, 3]") from err
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dtype == np.uint8:
        pass
    elif image.dtype.kind in "iu" and image.size and (image.min() < 0 or image.max() > 255):
        raise ApiError(422, "invalid_frame", f"{what} has values outside 0..255", "send uint8 pixel values")
    elif image.dtype.kind not in "iu":
        raise ApiError(422, "invalid_frame", f"{what} must hold uint8 pixel values, got {image.dtype}",
                       f"send uint8 [{limits.size}, {limits.size}, 3]")
    image = image.astype(np.uint8)
    check_image_size(image, limits.size, what)
    return image


async def read_frame(request: Request, limits: MediaLimits, max_json_bytes: int) -> tuple[np.ndarray, int | None]:
    """The step's one frame, in any of the accepted forms, and the step number if the body gave one."""
    if media_type(request) == NPY:
        data = await request.body()
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ApiError(422, "invalid_frame", f"the body is not a .npy array: {err}",
                           "save the frame with numpy.save (uint8 [H, W, 3])") from err
        if array.dtype != np.uint8:
            raise ApiError(422, "invalid_frame", f"the .npy frame is {array.dtype}; frames are uint8",
                           "send uint8 [H, W, 3]")
        return await asyncio.to_thread(frame_from_array, array, limits, "frame"), None
    body = await read_body(request, StepRequest, upload_fields=("frame",), max_part_bytes=max_json_bytes,
                           form_model=StepOptions)
    if "frame" in body.files:
        return await asyncio.to_thread(model_sized_image, body.files["frame"].data, "frame", limits), (
            getattr(body.options, "step", None))
    options = body.options if isinstance(body.options, StepRequest) else None
    if options is None:
        raise ApiError(422, "invalid_request", "no frame: send {\"frame\": base64} or upload `frame`")
    if options.frame is not None:
        data = b64decode_field(options.frame, "frame")
        return await asyncio.to_thread(model_sized_image, data, "frame", limits), options.step
    return await asyncio.to_thread(frame_from_array, options.array, limits, "array"), options.step


# ----------------------------------------------------------------------------- routes
@router.post(
    "/sessions", response_model=SessionInfo, status_code=201, dependencies=[Depends(require_json)],
    responses=errors(404, 409, 429, s404="`goal_id` is not cached on this server", s409="the model has no controller",
                     s429="the server holds as many sessions as it can (Retry-After), or its queues are full"),
)
async def create_session(
    body: SessionRequest, request: Request, response: Response, engine: EngineDep, settings: SettingsDep,
    goals: GoalsDep, sessions: SessionsDep,
) -> SessionInfo:
    """Open a plan session: the goal is encoded (or looked up) once, the settings validated once."""
    engine.require("controller")
    geo = engine.geo
    assert geo.action_dim is not None
    bounds = (body.action_low, body.action_high) if body.action_low is not None and body.action_high is not None else None
    cold = planner_config(body.preset, geo.action_dim, bounds, body.overrides, settings.max_plan_rows)
    if body.history_context:  # the observed frames are the world model's context: only a context-keeping step reads it
        if body.overrides.get("context", "full") != "full":
            raise ApiError(422, "invalid_planner_settings",
                           "history_context plans with the observed frames as the world model's context, which "
                           "needs context 'full'", "drop overrides.context or set it to \"full\"")
        cold = dataclasses.replace(cold, context="full")
    try:
        warm = warm_config(cold, body.warm_samples, body.warm_iterations)
    except ValueError as err:  # e.g. warm samples below the elites
        raise ApiError(422, "invalid_planner_settings", f"warm settings: {err}",
                       "raise warm_samples to at least the elites, or leave it out") from err
    ttl = body.ttl_s if body.ttl_s is not None else settings.session_ttl_s
    if ttl > settings.max_session_ttl_s:
        raise ApiError(422, "ttl_too_long", f"ttl_s {ttl:g} exceeds this server's {settings.max_session_ttl_s:g} s",
                       "ask for a shorter TTL (LAWM_MAX_SESSION_TTL_S sets the limit)")
    if body.goal_id is not None:
        goal = await goals.get(body.goal_id)
        if goal is None:
            raise ApiError(404, "unknown_goal", f"goal_id {body.goal_id!r} is not cached on this server",
                           "POST the goal image to /v1/goals again, or send it as `goal`")
        key = body.goal_id
    else:
        assert body.goal is not None
        limits = limits_of(engine, settings)
        image = await asyncio.to_thread(model_sized_image, b64decode_field(body.goal, "goal"), "goal", limits)
        key = goal_id(model_key(engine), image)
        goal = await goals.get(key)
        if goal is None:
            goal = (await cancel_on_disconnect(request, engine.encode_images(image[None], Priority.PLAN)))[0]
            await goals.put(key, goal)
    spec = SessionSpec(
        cold=cold, warm=warm, goal=goal, goal_id=key, ttl_s=ttl,
        control_period_s=None if body.control_period_ms is None else body.control_period_ms / 1000.0,
        cold_deadline_s=None if body.cold_deadline_ms is None else body.cold_deadline_ms / 1000.0,
        execute=min(body.execute, cold.horizon), history=geo.max_steps - 1, history_context=body.history_context,
        plan_ahead=body.plan_ahead, ahead_tolerance=body.ahead_tolerance,
    )
    session = sessions.create(spec)
    response.headers["Location"] = f"/v1/sessions/{session.id}"
    return _info(session, engine, sessions)


@router.get("/sessions/{session_id}", response_model=SessionInfo)
async def get_session(session_id: str, engine: EngineDep, sessions: SessionsDep) -> SessionInfo:
    """A session's settings, step count and remaining lifetime."""
    return _info(sessions.get(session_id), engine, sessions)


@router.delete("/sessions/{session_id}", status_code=204)
async def delete_session(session_id: str, sessions: SessionsDep) -> Response:
    """End a session (its state is dropped at once)."""
    sessions.delete(session_id)
    return Response(status_code=204)


@router.post(
    "/sessions/{session_id}/step",
    response_model=StepResponse,
    openapi_extra=openapi_body(StepRequest, {"frame": "the newest frame (PNG or JPEG), the model's size",
                                             "request": "optional JSON: {\"step\": n}"},
                               raw_types=("image/png", "image/jpeg", NPY)),
    responses=errors(409, 429, 504, s409="a step of this session is running, or `step` is not the next one"),
)
async def session_step(
    session_id: str, request: Request, engine: EngineDep, settings: SettingsDep, sessions: SessionsDep,
    slots: PlanSlotsDep,
    step: Annotated[int | None, Query(ge=0, description="this step's number, for raw and upload bodies")] = None,
) -> StepResponse:
    """The newest observation -> the action(s) to execute now. The first step plans cold; later ones
    start from the previous plan shifted by the executed actions, with the session's warm settings.
    Steps run above every other request in the batchers (`Priority.SESSION`); past the control
    period the best plan so far is returned."""
    t0 = time.perf_counter()
    sessions.get(session_id)  # an unknown id is a 404 before the body is read
    frame, body_step = await read_frame(request, limits_of(engine, settings), settings.max_json_bytes)
    return await cancel_on_disconnect(
        request, run_step(engine, sessions, slots, session_id, frame, body_step if body_step is not None else step, t0)
    )


async def run_step(
    engine: Engine, sessions: SessionStore, slots: PlanSlots, session_id: str, frame: np.ndarray, step: int | None,
    t0: float,
) -> StepResponse:
    """One session step on a decoded frame (HTTP and WebSocket alike); `t0` is when the request arrived."""
    start = time.monotonic()
    session = sessions.begin_step(session_id, step)
    spec = session.spec
    period = session.period()
    soft = None if period is None else start + period
    hard = None if period is None else start + 2 * period
    cfg, warm_start = session.config(), session.warm_start()
    ahead_task = session.take_ahead()
    t1 = t2 = time.perf_counter()
    state: np.ndarray | None = None
    made_ahead: AheadPlan | None = None
    ahead_error: float | None = None
    ahead_wait_s = 0.0
    try:
        state = (await engine.encode_images(frame[None], Priority.SESSION, hard))[0]  # one new tubelet
        t_wait = time.perf_counter()
        made_ahead = await ready_ahead(ahead_task, soft)
        ahead_wait_s = time.perf_counter() - t_wait
        if made_ahead is not None:
            ahead_error = relative_error(state, made_ahead.predicted)
            if ahead_error > spec.ahead_tolerance:  # the robot is elsewhere: plan from where it is
                made_ahead = None
        history = None
        if spec.history_context and session.history and made_ahead is None:
            past = np.stack(list(session.history))  # [K, N, D]
            latents = await engine.latent_actions(np.concatenate([past, state[None]]), Priority.SESSION, hard)  # [K, Z]
            history = (past, latents)
        t2 = time.perf_counter() - ahead_wait_s  # encode (and history) time, without the wait for the plan ahead
        if made_ahead is not None:
            actions, cost, iterations = made_ahead.actions, made_ahead.cost, made_ahead.iterations
            evaluations, deadline_hit, plan_s = made_ahead.evaluations, False, 0.0
            parts = {"controller": 0.0, "world_model": 0.0}  # the search ran in the previous period (ahead_s)
        else:
            result, parts = await run_plan(engine, slots, cfg, state, spec.goal, soft, hard, initial_mean=warm_start,
                                           history=history, priority=Priority.SESSION)
            actions, cost = result.actions.numpy(), finite_or_none(result.cost)
            iterations, evaluations, deadline_hit = result.iterations_run, result.evaluations, result.deadline_hit
            plan_s = result.timings["total"]
    except DeadlineExceeded:
        if warm_start is None:  # nothing planned yet: no action to fall back on
            sessions.abandon_step(session)
            raise
        # The control period ran out in the queues: the robot gets the best action known, the
        # previous plan shifted (what the search would have started from), rather than a 504.
        actions, cost, iterations, evaluations, deadline_hit, plan_s = warm_start, None, 0, 0, True, 0.0
        parts = {"controller": 0.0, "world_model": 0.0}
    except BaseException:  # refused, failed or cancelled: the session is as before the step
        if ahead_task is not None:
            ahead_task.cancel()
        sessions.abandon_step(session)
        raise
    sessions.finish_step(session, state, actions)
    if spec.plan_ahead and state is not None:
        executed = actions[: spec.execute]
        session.start_ahead(asyncio.create_task(plan_ahead(
            engine, slots, session.config(), state, spec.goal, executed, shifted(actions, spec.execute))))
    return StepResponse(
        session_id=session.id,
        step=session.steps - 1,
        warm=warm_start is not None,
        ahead=made_ahead is not None,
        ahead_error=ahead_error,
        actions_now=actions[: spec.execute].tolist(),
        actions=actions.tolist(),
        cost=cost,
        iterations=iterations,
        evaluations=evaluations,
        deadline_hit=deadline_hit,
        expires_in_s=max(0.0, session.expires_at - sessions.clock()),
        timing={
            "decode_s": t1 - t0, "encode_s": t2 - t1, "plan_s": plan_s,
            "controller_s": parts["controller"], "world_model_s": parts["world_model"],
            **({"ahead_wait_s": ahead_wait_s, "ahead_s": made_ahead.seconds} if made_ahead is not None else {}),
            "total_s": time.perf_counter() - t0,
        },
    )


# ----------------------------------------------------------------------------- WebSocket
@router.websocket("/sessions/{session_id}/ws")
async def session_stream(websocket: WebSocket, session_id: str) -> None:
    """The step endpoint for clients that stream: each message is one frame (a binary message holds
    a .npy uint8 `[H, W, 3]`; a text message the JSON of a step body), each answer the step's JSON,
    or `{"error": {...}}` with the same codes as HTTP (the connection stays open). An unknown or
    ended session closes the connection with code 4404 after its error. Steps on one connection run
    one after the other; the session is not ended when the connection closes (DELETE ends it)."""
    state = websocket.app.state
    engine, settings = state.engine, state.settings
    sessions: SessionStore = state.sessions
    await websocket.accept()
    if not engine.ready:
        await websocket.send_json(error_body("not_ready", f"the model is not ready ({engine.state})", None, None))
        await websocket.close(code=1013)  # try again later
        return
    limits = limits_of(engine, settings)
    while True:
        try:
            message = await websocket.receive()
        except WebSocketDisconnect:
            return
        if message["type"] == "websocket.disconnect":
            return
        t0 = time.perf_counter()
        try:
            sessions.get(session_id)
            frame, step = await _ws_frame(message, limits)
            answer = await run_step(engine, sessions, state.plan_slots, session_id, frame, step, t0)
            await websocket.send_text(answer.model_dump_json())
        except (ApiError, InferenceError, RequestValidationError) as err:
            await websocket.send_json(_ws_error(err))
            if isinstance(err, UnknownSession):
                await websocket.close(code=4404)
                return


async def _ws_frame(message: dict[str, Any], limits: MediaLimits) -> tuple[np.ndarray, int | None]:
    if message.get("bytes") is not None:
        try:
            array = np.load(io.BytesIO(message["bytes"]), allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ApiError(422, "invalid_frame", f"the binary message is not a .npy array: {err}",
                           "send numpy.save of a uint8 [H, W, 3] frame") from err
        if array.dtype != np.uint8:
            raise ApiError(422, "invalid_frame", f"the .npy frame is {array.dtype}; frames are uint8")
        return await asyncio.to_thread(frame_from_array, array, limits, "frame"), None
    options = parse_json(StepRequest, message.get("text") or "")
    if options.frame is not None:
        data = b64decode_field(options.frame, "frame")
        return await asyncio.to_thread(model_sized_image, data, "frame", limits), options.step
    return await asyncio.to_thread(frame_from_array, options.array, limits, "array"), options.step


def _ws_error(err: Exception) -> dict[str, Any]:
    """The HTTP error body of `err`, with its status, for a WebSocket message."""
    if isinstance(err, ApiError):
        status, body = err.status, error_body(err.code, err.message, err.hint, None)
    elif isinstance(err, RequestValidationError):
        message, fields = validation_message(list(err.errors()))
        status, body = 422, error_body("invalid_request", message, "fix the named fields", None)
        body["error"]["fields"] = fields
    else:
        answer = answer_for(err)  # type: ignore[arg-type]
        status, body = answer.status, error_body(answer.code, answer.message, answer.hint, None)
    body["error"]["status"] = status
    return body
