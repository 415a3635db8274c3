"""The v1 API: latent actions, rollouts, goals, plans, models. Handlers read and check the request,
then hand the work to the engine (`service.inference.engine`), the rollouts
(`service.inference.rollout`) and the planner (`service.inference.planner`); every model call goes
through the batchers.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response

from service.deps import DecodeDep, EngineDep, GoalsDep, LatentsDep, PlanSlotsDep, SettingsDep
from service.errors import ApiError
from service.inference.cache import content_key
from service.inference.engine import Engine
from service.inference.goals import goal_id
from service.inference.planner import finite_or_none, planner_config, run_plan
from service.inference.queue import Priority
from service.inference.rollout import decode_states, rollout_actions, rollout_latents
from service.inference.stage import Stage
from service.inputs import cancel_on_disconnect, is_upload, media_type, npy_response, read_body, wants_npy
from service.media import MediaLimits, b64decode_field, clip_in_stage, model_sized_image, resized_from
from service.openapi import errors
from service.schemas import (
    GoalRequest,
    GoalResponse,
    LatentActionsJson,
    LatentActionsResponse,
    ModelInfo,
    ModelRef,
    ModelsResponse,
    PlanRequest,
    PlanResponse,
    PrecisionInfo,
    RolloutRequest,
    RolloutResponse,
    SourceOut,
    openapi_body,
)
from service.settings import Settings
from training.data.video import encode_mp4, encode_png_strip
from training.planning import PRESETS
from training.precision import cpu_bf16_support

router = APIRouter(prefix="/v1", tags=["v1"])


def limits_of(engine: Engine, settings: Settings) -> MediaLimits:
    return MediaLimits.from_settings(settings, size=engine.geo.image_size, fps=engine.geo.fps)


def refuse_at_the_door(request: Request, engine: Engine, decode: Stage, components: tuple[str, ...]) -> None:
    """Before the body is read: 429 when a model queue the request will join, or (for an upload) the
    decode stage, is already over its share of the wait budget; no read or decode is spent on it."""
    engine.at_the_door(components, Priority.INTERACTIVE)
    if is_upload(request):
        decode.at_the_door()


def model_ref(engine: Engine) -> ModelRef:
    assert engine.model is not None
    return ModelRef(name=engine.model.name, version=engine.model.version, runtime=engine.model.runtime)


def deadline_of(deadline_ms: float | None, start: float) -> float | None:
    return None if deadline_ms is None else start + deadline_ms / 1000.0


def as_array(rows: list[list[float]], name: str, width: int, what: str) -> np.ndarray:
    """A validated JSON matrix -> float32 `[steps, width]`, or a 422 naming the expected width."""
    array = np.asarray(rows, dtype=np.float32)
    if array.shape[1] != width:
        raise ApiError(
            422,
            "wrong_shape",
            f"{name} has {array.shape[1]} values per step; the model takes {width} ({what})",
            f"send {name} as [steps, {width}]",
        )
    if not np.isfinite(array).all():  # finite as float64 but out of float32's range
        raise ApiError(422, "not_finite", f"{name} holds values outside float32's range", "send finite numbers")
    return array


# ----------------------------------------------------------------------------- latent actions
@router.post(
    "/latent-actions",
    response_model=LatentActionsResponse,
    openapi_extra=openapi_body(
        LatentActionsJson, {"file": "the video (MP4, MOV, WebM, MKV, AVI or GIF)"},
        raw_types=("video/mp4", "video/webm", "video/quicktime", "video/x-msvideo", "image/gif"),
    ),
    responses={200: {"content": {"application/x-npy": {}}, "description": "latents; .npy with Accept: application/x-npy"},
               **errors(429, 504)},
)
async def latent_actions(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    cache: LatentsDep,
    decode: DecodeDep,
    deadline_ms: Annotated[float | None, Query(gt=0, le=600_000, description="answer within this or get a 504")] = None,
) -> Any:
    """A clip -> one latent action per step (between consecutive 2-frame states), with timestamps.

    Upload a video (multipart field `file`, or the raw body with a video Content-Type), which the
    server samples at the model's fps and resizes; or send JSON frames of the model's size.
    `Accept: application/x-npy` answers the latents `[steps, latent_dim]` as a NumPy .npy file."""
    t0 = time.perf_counter()
    deadline = deadline_of(deadline_ms, time.monotonic())
    limits = limits_of(engine, settings)
    refuse_at_the_door(request, engine, decode, ("encoder", "idm"))
    body = await read_body(request, LatentActionsJson, upload_fields=("file",), max_part_bytes=settings.max_json_bytes,
                           options_field=False)
    options = body.options if isinstance(body.options, LatentActionsJson) else None
    frames, source = await clip_in_stage(decode, body, "file", options.frames if options else None, limits,
                                         deadline=deadline)
    fps = options.fps if options is not None and options.fps else engine.geo.fps
    tb = engine.geo.tubelet
    usable = engine.geo.usable_frames(len(frames))
    if engine.geo.latent_steps(len(frames)) < 1:
        raise ApiError(
            422,
            "clip_too_short",
            f"the clip gives {len(frames)} frames; latent actions need at least {2 * tb} (two states of {tb} frames)",
            f"send at least {2 * tb / engine.geo.fps:g} s of video at the model's {engine.geo.fps:g} fps",
        )
    t1 = time.perf_counter()

    async def compute() -> tuple[np.ndarray, float]:
        states = await engine.encode(frames[:usable], Priority.INTERACTIVE, deadline)
        t2 = time.perf_counter()
        latents = await engine.latent_actions(states, Priority.INTERACTIVE, deadline)
        return latents, t2

    key = content_key(model_key(engine), frames[:usable])
    cached = None if fresh_wanted(request) else await cache.get(key)
    if cached is not None:  # the same clip on the same model version: computed before, here or on a replica
        latents, t2 = cached, t1
    else:
        latents, t2 = await cancel_on_disconnect(request, compute())
        await cache.put(key, latents)
    t3 = time.perf_counter()
    starts = [i * tb / fps for i in range(len(latents))]  # first frame of state i
    ends = [(i + 1) * tb / fps for i in range(len(latents))]  # first frame of state i + 1
    if wants_npy(request):
        return npy_response(latents, {"X-Latent-Steps": str(len(latents)), "X-Frames-Per-Second": f"{fps:g}"})
    return LatentActionsResponse(
        model=model_ref(engine),
        latent_dim=int(latents.shape[1]),
        fps=fps,
        frames_used=usable,
        steps=len(latents),
        latents=latents.tolist(),
        start_s=starts,
        end_s=ends,
        source=SourceOut(**dataclasses.asdict(source)) if source is not None else None,
        resized_from=resized_from(source, engine.geo.image_size),
        timing={"decode_s": t1 - t0, "encode_s": t2 - t1, "idm_s": t3 - t2, "total_s": time.perf_counter() - t0},
    )


# ----------------------------------------------------------------------------- rollouts
@router.post(
    "/rollouts",
    response_model=RolloutResponse,
    openapi_extra=openapi_body(
        RolloutRequest,
        {"context": "the context video (MP4, MOV, WebM, MKV, AVI or GIF)",
         "request": "the RolloutRequest options as a JSON string (without `frames`)"},
    ),
    responses={200: {"content": {"application/x-npy": {}}, "description": "states; .npy with Accept: application/x-npy"},
               **errors(409, 429, 504, s409="real actions on a model without a controller")},
)
async def rollouts(request: Request, engine: EngineDep, settings: SettingsDep, decode: DecodeDep) -> Any:
    """Context (a clip or frames) + latent actions or real actions -> predicted states, optionally
    decoded to an MP4 or a PNG strip."""
    t0 = time.perf_counter()
    start = time.monotonic()
    geo = engine.geo
    limits = limits_of(engine, settings)
    refuse_at_the_door(request, engine, decode, ("encoder",))
    body = await read_body(request, RolloutRequest, upload_fields=("context",), max_part_bytes=settings.max_json_bytes,
                           accept_raw=False)
    options = body.options
    if not isinstance(options, RolloutRequest):
        raise ApiError(422, "invalid_request", "missing the `request` field (the rollout options as JSON)",
                       "add a `request` form field holding {\"latents\": [...]} or {\"actions\": [...]}")
    deadline = deadline_of(options.deadline_ms, start)
    frames, source = await clip_in_stage(decode, body, "context", options.frames, limits, deadline=deadline)
    driven = "latents" if options.latents is not None else "actions"
    rows = options.latents if options.latents is not None else options.actions
    assert rows is not None
    if len(rows) > settings.max_rollout_steps:
        raise ApiError(422, "too_many_steps", f"{driven}: {len(rows)} steps; at most {settings.max_rollout_steps}",
                       "split the rollout (LAWM_MAX_ROLLOUT_STEPS sets the limit)")
    if driven == "actions":
        engine.require("controller")
        assert geo.action_dim is not None
        values = as_array(rows, "actions", geo.action_dim, "the controller's action size")
    else:
        values = as_array(rows, "latents", geo.latent_dim, "the latent size")
    t1 = time.perf_counter()

    async def compute() -> tuple[np.ndarray, np.ndarray, int, np.ndarray | None]:
        if len(frames) == 1:  # one observation: duplicated into a state, as the planner does
            context = await engine.encode_images(frames, Priority.INTERACTIVE, deadline)
        else:
            context = await engine.encode(frames[: geo.usable_frames(len(frames))], Priority.INTERACTIVE, deadline)
        if driven == "latents":
            predicted, applied = await rollout_latents(engine, context, values, Priority.INTERACTIVE, deadline), values
        else:
            predicted, applied = await rollout_actions(engine, context[-1], values, Priority.INTERACTIVE, deadline)
        decoded = None
        if options.decode != "none":
            decoded = await decode_states(engine, np.concatenate([context[-1:], predicted]), Priority.INTERACTIVE,
                                          deadline)
        return predicted, applied, len(context), decoded

    predicted, applied, context_states, decoded = await cancel_on_disconnect(request, compute())
    t2 = time.perf_counter()
    if wants_npy(request):
        return npy_response(predicted, {"X-Rollout-Steps": str(len(predicted))})
    video = content_type = None
    if decoded is not None:
        if options.decode == "mp4":
            video, content_type = await asyncio.to_thread(encode_mp4, decoded, geo.fps), "video/mp4"
        else:
            video, content_type = await asyncio.to_thread(encode_png_strip, decoded), "image/png"
    return RolloutResponse(
        model=model_ref(engine),
        steps=len(predicted),
        driven_by=driven,
        context_states=context_states,
        resized_from=resized_from(source, geo.image_size),
        state_shape=list(geo.state_shape),
        states=predicted.tolist() if options.include_states else None,
        latents=applied.tolist(),
        video=base64.b64encode(video).decode() if video is not None else None,
        video_content_type=content_type,
        video_frames=len(decoded) if decoded is not None else None,
        timing={"decode_s": t1 - t0, "compute_s": t2 - t1, "total_s": time.perf_counter() - t0},
    )


# ----------------------------------------------------------------------------- goals and plans
def fresh_wanted(request: Request) -> bool:
    """`Cache-Control: no-cache` asks for a fresh computation (load generators, debugging)."""
    return "no-cache" in request.headers.get("cache-control", "").lower()


def model_key(engine: Engine) -> str:
    assert engine.model is not None
    return f"{engine.model.name}/{engine.model.version}/{engine.model.runtime}"


async def _image(text: str, what: str, limits: MediaLimits) -> np.ndarray:
    """A base64 image of the model's size -> uint8 `[H, W, 3]` (decoded in a worker thread)."""
    return await asyncio.to_thread(model_sized_image, b64decode_field(text, what), what, limits)


@router.post(
    "/goals",
    response_model=GoalResponse,
    openapi_extra=openapi_body(GoalRequest, {"image": "the goal image (PNG or JPEG), the model's size"},
                               raw_types=("image/png", "image/jpeg")),
    responses=errors(429),
)
async def goals(request: Request, engine: EngineDep, settings: SettingsDep, store: GoalsDep) -> GoalResponse:
    """Encode a goal image once and cache its state; POST /v1/plan then takes the returned `goal_id`."""
    t0 = time.perf_counter()
    limits = limits_of(engine, settings)
    body = await read_body(request, GoalRequest, upload_fields=("image",), max_part_bytes=settings.max_json_bytes,
                           options_field=False)
    if isinstance(body.options, GoalRequest):
        image = await _image(body.options.image, "image", limits)
    elif "image" in body.files:
        image = await asyncio.to_thread(model_sized_image, body.files["image"].data, "image", limits)
    else:
        raise ApiError(422, "invalid_request", "no goal image: send {\"image\": base64} or upload `image`")
    key = goal_id(model_key(engine), image)
    t1 = time.perf_counter()
    if await store.get(key) is None:
        state = await cancel_on_disconnect(request, engine.encode_images(image[None], Priority.INTERACTIVE))
        await store.put(key, state[0])
    return GoalResponse(
        goal_id=key,
        state_shape=list(engine.geo.state_shape),
        model=model_ref(engine),
        cached_goals=len(store),
        timing={"decode_s": t1 - t0, "encode_s": time.perf_counter() - t1},
    )


@router.delete("/goals/{goal_id}", status_code=204)
async def delete_goal(goal_id: str, store: GoalsDep) -> Response:
    """Forget a cached goal."""
    if not await store.delete(goal_id):
        raise ApiError(404, "unknown_goal", f"no goal {goal_id!r} is cached")
    return Response(status_code=204)


def require_json(request: Request) -> None:
    if media_type(request) != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type {media_type(request) or '(none)'} is not accepted here; send application/json")


@router.post(
    "/plan", response_model=PlanResponse, dependencies=[Depends(require_json)],
    responses=errors(404, 409, 429, 504, s404="`goal_id` is not cached on this server",
                     s409="the model has no controller"),
)
async def plan(
    body: PlanRequest, request: Request, engine: EngineDep, settings: SettingsDep, store: GoalsDep, slots: PlanSlotsDep
) -> PlanResponse:
    """Current observation + goal -> the best real-action sequence found by the planner, its predicted
    cost and where the time went. Runs at the highest priority, for robot control loops."""
    t0 = time.perf_counter()
    start = time.monotonic()
    engine.require("controller")
    geo = engine.geo
    assert geo.action_dim is not None
    limits = limits_of(engine, settings)
    bounds = (body.action_low, body.action_high) if body.action_low is not None and body.action_high is not None else None
    cfg = planner_config(body.preset, geo.action_dim, bounds, body.overrides, settings.max_plan_rows)
    observation = await _image(body.observation, "observation", limits)
    goal_state = None
    if body.goal_id is not None:
        goal_state = await store.get(body.goal_id)
        if goal_state is None:
            raise ApiError(
                404,
                "unknown_goal",
                f"goal_id {body.goal_id!r} is not cached on this server (never posted, evicted, or from another "
                "server or model version)",
                "POST the goal image to /v1/goals again (the same image gives the same id), or send it as `goal`",
            )
        key = body.goal_id
        images = observation[None]
    else:
        assert body.goal is not None
        goal_image = await _image(body.goal, "goal", limits)
        key = goal_id(model_key(engine), goal_image)
        images = np.stack([observation, goal_image])
    # One deadline for everything: the search stops before an iteration that would not finish in
    # time, and an engine call still queued or computing at the deadline ends it (one batch late at most).
    deadline = deadline_of(body.deadline_ms, start)
    t1 = time.perf_counter()

    async def compute() -> tuple[Any, dict[str, float], float]:
        states = await engine.encode_images(images, Priority.PLAN, deadline)
        t2 = time.perf_counter()
        goal = goal_state if goal_state is not None else states[1]
        if goal_state is None:
            await store.put(key, goal)
        result, parts = await run_plan(engine, slots, cfg, states[0], goal, deadline, deadline)
        return result, parts, t2

    result, parts, t2 = await cancel_on_disconnect(request, compute())
    planner = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
    return PlanResponse(
        model=model_ref(engine),
        actions=result.actions.tolist(),
        first_action=result.first_action.tolist(),
        cost=finite_or_none(result.cost),
        iterations=result.iterations_run,
        evaluations=result.evaluations,
        deadline_hit=result.deadline_hit,
        history=[finite_or_none(c) for c in result.history],
        planner=planner,
        goal_id=key,
        timing={
            "total_s": time.perf_counter() - t0,
            "decode_s": t1 - t0,
            "encode_s": t2 - t1,
            "plan_s": result.timings["total"],
            "step_s": result.timings["step"],
            "cost_s": result.timings["cost"],
            "controller_s": parts["controller"],
            "world_model_s": parts["world_model"],
        },
    )


# ----------------------------------------------------------------------------- models
def _preset_json(name: str) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(PRESETS[name]).items()}


@functools.cache
def _cpu_bf16() -> str:
    return cpu_bf16_support().kind  # the CPU does not change under a running process: read /proc/cpuinfo once


@router.get("/models", response_model=ModelsResponse)
async def models(engine: EngineDep, settings: SettingsDep) -> ModelsResponse:
    """The model being served: version, runtime, geometry, components and their warm batch sizes, the
    precision each component runs at and why."""
    assert engine.model is not None
    geo = engine.geo
    info = ModelInfo(
        name=engine.model.name,
        version=engine.model.version,
        runtime=engine.model.runtime,
        ready=engine.ready,
        image_size=geo.image_size,
        fps=geo.fps,
        tubelet=geo.tubelet,
        latent_dim=geo.latent_dim,
        state_shape=list(geo.state_shape),
        max_steps=geo.max_steps,
        action_dim=geo.action_dim,
        planner_presets={name: _preset_json(name) for name in PRESETS},
        components=engine.describe()["components"],
        precision=PrecisionInfo(
            components=engine.model.precision, source=engine.model.precision_source, cpu_bf16=_cpu_bf16()
        ),
        limits={
            "max_upload_bytes": settings.max_upload_bytes,
            "max_json_bytes": settings.max_json_bytes,
            "max_frames": settings.max_frames,
            "max_pixels": settings.max_pixels,
            "max_duration_s": settings.max_duration_s,
            "max_rollout_steps": settings.max_rollout_steps,
            "max_plan_rows": settings.max_plan_rows,
        },
    )
    return ModelsResponse(models=[info])
