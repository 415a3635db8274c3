"""Async jobs: POST /v1/transfers -> 202 + Location; GET /v1/jobs[/{id}[/result]]; DELETE cancels.

An upload's headers are checked when the job is submitted, so a bad upload is a 4xx at once; the
queued job holds the upload's bytes (not its decoded frames) and decodes them when it runs in the
background (`service.jobs.runner`) at render priority. At most `max_queued_jobs` jobs are queued or
running (429 + Retry-After beyond). `Idempotency-Key` (after the IETF httpapi draft): the
same key with the same body returns the same job (202 again, `Idempotent-Replayed: true`); the
same key with a different body is a 422.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import math
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from service.deps import EngineDep, JobsDep, SettingsDep
from service.errors import ApiError
from service.inputs import Body, read_body
from service.jobs.runner import JobService, RunnerClosed
from service.jobs.schemas import JobList, JobOut, TransferRequest
from service.jobs.store import IdempotencyConflict, Job, JobSpec, JobState
from service.jobs.transfer import FRAMES, KIND, UPLOAD, VIDEO, pack_frames
from service.media import MediaLimits, clip_from, probe_clip_bytes, resized_from
from service.openapi import errors
from service.schemas import openapi_body
from service.settings import Settings

router = APIRouter(prefix="/v1", tags=["jobs"])

IDEMPOTENCY_KEY = "Idempotency-Key"
MAX_KEY_LENGTH = 255
CLIPS = ("clip_a", "clip_b")
JSON = "application/json"
DEFAULT_JOB_S = 10.0  # seconds a job is taken to run before any has been measured (for Retry-After)


def job_out(job: Job) -> JobOut:
    url = f"/v1/jobs/{job.id}"
    return JobOut(**job.to_json(), links={"self": url, "result": f"{url}/result"})


async def job_or_404(runner: JobService, job_id: str) -> Job:
    job = await runner.store.get(job_id)
    if job is None:
        raise ApiError(
            404,
            "job_not_found",
            f"no job {job_id!r}",
            "job ids come from POST /v1/transfers; ended jobs are forgotten after job_ttl_s "
            f"({runner.store.ttl_s:g} s)",
        )
    return job


def _key(request: Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is None:
        return None
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ApiError(
            400,
            "bad_idempotency_key",
            f"{IDEMPOTENCY_KEY} must be 1..{MAX_KEY_LENGTH} printable characters",
            "use a fresh UUID per logical request",
        )
    return key


def _fingerprint(body: Body, options: TransferRequest) -> str:
    """The request's identity for Idempotency-Key: its options and the sha256 of each upload."""
    h = hashlib.sha256(options.model_dump_json().encode())
    for name in CLIPS:
        upload = body.files.get(name)
        if upload is not None:
            h.update(f"\n{name}:{hashlib.sha256(upload.data).hexdigest()}".encode())
    return h.hexdigest()


def _clip(body: Body, name: str, frames: list[str] | None, limits: MediaLimits) -> tuple[bytes, str, dict[str, Any]]:
    """One clip as the job keeps it while queued -> (input bytes, their kind, what the job records).

    An upload is checked from its headers (a bad one is a 4xx now) and kept as its bytes, decoded
    when the job runs; JSON frames (already the model's size) are decoded and packed. `frames` is
    then the count after sampling, estimated from the header's duration for an upload (None when
    the header has none)."""
    upload = body.files.get(name)
    if upload is not None and not frames:
        src = probe_clip_bytes(upload.data, filename=upload.filename, limits=limits)
        estimate = None if src.duration_s is None else max(1, math.ceil(src.duration_s * limits.fps - 1e-6))
        info = {"frames": estimate, "source": f"{src.container} {src.codec} {src.width}x{src.height}",
                "resized_from": resized_from(src, limits.size)}
        return upload.data, UPLOAD, info
    array, _ = clip_from(body, name, frames, limits, frames_field=f"{name}.frames")
    return pack_frames(array), FRAMES, {"frames": len(array), "source": "frames"}


async def check_capacity(runner: JobService, settings: Settings) -> None:
    """429 before anything is read when `max_queued_jobs` jobs are queued or running: each holds
    its inputs in this process's memory, and a queue nobody can finish in time helps no one. With
    Redis the jobs wait in Redis for any worker, bounded by Redis's own memory limit, not here."""
    if settings.redis_url:
        return
    counts = await runner.store.counts()
    waiting = counts.get(JobState.QUEUED, 0) + counts.get(JobState.RUNNING, 0)
    if waiting < settings.max_queued_jobs:
        return
    per_job = getattr(runner, "mean_run_s", None) or DEFAULT_JOB_S
    retry = max(1, math.ceil(per_job * (waiting - settings.max_queued_jobs + 1) / max(1, getattr(runner, "concurrency", 1))))
    raise ApiError(
        429,
        "too_many_jobs",
        f"{waiting} jobs are queued or running; this server holds at most {settings.max_queued_jobs}",
        "retry after the Retry-After seconds (LAWM_MAX_QUEUED_JOBS sets the limit)",
        headers={"Retry-After": str(retry)},
    )


@router.post(
    "/transfers",
    status_code=202,
    response_model=JobOut,
    openapi_extra=openapi_body(
        TransferRequest,
        {
            "clip_a": "the video whose actions are transferred",
            "clip_b": "the video whose first state they drive",
            "request": "JSON options: steps, fps",
        },
    ),
    responses={
        202: {"description": "the job, queued; poll its Location"},
        **errors(400, 422, 429, s400="a malformed Idempotency-Key or multipart body, or an empty upload",
                 s422="bad clip, or an Idempotency-Key reused with another body",
                 s429="as many jobs are queued or running as the server holds (Retry-After)"),
    },
)
async def create_transfer(
    request: Request, response: Response, engine: EngineDep, runner: JobsDep, settings: SettingsDep
) -> JobOut:
    """Clip A's latent actions applied to clip B's first state through the world model, rendered to MP4,
    with cycle-consistency metrics. An async job: poll `Location`, then GET its result."""
    if runner.closing:
        raise ApiError(
            503,
            "shutting_down",
            "the server is shutting down and takes no new jobs",
            "submit the job to another replica, or retry after the restart",
            headers={"Retry-After": "5"},
        )
    key = _key(request)
    await check_capacity(runner, settings)
    body = await read_body(
        request,
        TransferRequest,
        upload_fields=CLIPS,
        max_part_bytes=settings.max_json_bytes,
        accept_raw=False,
    )
    options = body.options if isinstance(body.options, TransferRequest) else TransferRequest()
    limits = MediaLimits.from_settings(settings, size=engine.geo.image_size, fps=engine.geo.fps)
    (data_a, kind_a, info_a), (data_b, kind_b, info_b) = await asyncio.gather(
        asyncio.to_thread(_clip, body, "clip_a", options.clip_a.frames if options.clip_a else None, limits),
        asyncio.to_thread(_clip, body, "clip_b", options.clip_b.frames if options.clip_b else None, limits),
    )
    tb = engine.geo.tubelet
    # Counts of uploads are estimates from their headers; the job checks the decoded clips again.
    count_a, count_b = info_a["frames"], info_b["frames"]
    available = engine.geo.latent_steps(count_a) if count_a is not None else None
    if (available is not None and available < 1) or (count_b is not None and count_b < tb):
        raise ApiError(
            422,
            "clip_too_short",
            f"clip_a gives {count_a} frames and clip_b {count_b}; a transfer "
            f"needs at least {2 * tb} from clip_a (two states) and {tb} from clip_b (one state)",
            f"send at least {2 * tb / engine.geo.fps:g} s of video at the model's {engine.geo.fps:g} fps",
        )
    if options.steps is not None and available is not None and options.steps > available:
        raise ApiError(
            422,
            "bad_steps",
            f"steps={options.steps} but clip_a gives {available} latent steps",
            f"ask for 1..{available}, or leave steps out for all of them",
        )
    params = {
        "steps": options.steps,
        "fps": options.fps or engine.geo.fps,
        "clip_a": info_a,
        "clip_b": info_b,
        "inputs": {"a": kind_a, "b": kind_b},
        "decode": dataclasses.asdict(limits),
    }
    spec = JobSpec(KIND, params, {"a": data_a, "b": data_b}, _fingerprint(body, options))
    try:
        job, created = await runner.store.create(spec, key)
    except IdempotencyConflict as e:
        raise ApiError(
            422,
            "idempotency_key_reused",
            f"{IDEMPOTENCY_KEY} {key!r} was already used for job {e.job_id} with a different request body",
            "use a new key for a new request",
        ) from None
    if created:
        try:
            runner.submit(job)
        except RunnerClosed:
            await runner.store.fail(
                job.id, "shutdown", "the server shut down before the job started; submit it again"
            )
            raise ApiError(
                503,
                "shutting_down",
                "the server is shutting down and takes no new jobs",
                headers={"Retry-After": "5"},
            ) from None
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_out(job)


@router.get("/jobs", response_model=JobList)
async def list_jobs(
    runner: JobsDep,
    state: Annotated[JobState | None, Query(description="only jobs in this state")] = None,
) -> JobList:
    """The jobs this server holds (ended ones until their TTL), oldest first."""
    return JobList(jobs=[job_out(j) for j in await runner.store.list_jobs(state)])


@router.get("/jobs/{job_id}", response_model=JobOut)
async def get_job(job_id: str, runner: JobsDep, response: Response) -> JobOut:
    """Status, progress (0..1, with the current stage) and per-stage timings."""
    job = await job_or_404(runner, job_id)
    if not job.done:
        response.headers["Retry-After"] = "1"  # paces polling
    return job_out(job)


def _wants(request: Request, fmt: str | None) -> str:
    """ "mp4" or "json": `?format=` first, then the Accept header (MP4 when absent or */*)."""
    if fmt is not None:
        return fmt
    ranked = []
    for i, part in enumerate((request.headers.get("accept") or "*/*").split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        q = next(
            (float(p[2:]) for p in params if p.startswith("q=") and p[2:].replace(".", "", 1).isdigit()), 1.0
        )
        if q > 0:
            ranked.append((-q, i, media.lower()))
    for _, _, media in sorted(ranked):
        if media in (VIDEO, "video/*", "*/*"):
            return "mp4"
        if media in (JSON, "application/*"):
            return "json"
    raise ApiError(
        406,
        "not_acceptable",
        f"the result is {VIDEO} or {JSON}; Accept asked for neither",
        f"send Accept: {VIDEO} or {JSON}, or add ?format=mp4|json",
    )


@router.get(
    "/jobs/{job_id}/result",
    responses={
        200: {
            "content": {VIDEO: {}, JSON: {}},
            "description": "the MP4 (default), or the JSON metrics with "
            "Accept: application/json or ?format=json",
        },
        **errors(406, 409, s409="the job has not succeeded"),
    },
)
async def get_result(
    request: Request,
    job_id: str,
    runner: JobsDep,
    fmt: Annotated[
        str | None, Query(alias="format", pattern="^(mp4|json)$", description="mp4 or json; overrides Accept")
    ] = None,
) -> Response:
    """The render (MP4) or its metrics (JSON, with cycle consistency and PSNR/SSIM against clip A)."""
    job = await job_or_404(runner, job_id)
    if job.state is not JobState.SUCCEEDED:
        if job.done:
            reason = f": {job.error['message']}" if job.error else ""
            raise ApiError(
                409,
                f"job_{job.state.value}",
                f"job {job_id} {job.state.value}{reason}; it has no result",
                "submit a new job" if job.state is JobState.FAILED else None,
            )
        raise ApiError(
            409,
            "job_not_finished",
            f"job {job_id} is {job.state.value} ({job.progress:.0%})",
            f"poll GET /v1/jobs/{job_id} until its state is succeeded",
            headers={"Retry-After": "1"},
        )
    result = await runner.store.result(job_id)
    if result is None:  # expired between the two reads
        raise ApiError(404, "job_not_found", f"job {job_id}'s result has expired")
    video = result.artifacts.get(VIDEO, b"")
    if _wants(request, fmt) == "json":
        payload = {
            "job": job_out(job).model_dump(),
            "metrics": result.metrics,
            "video": {
                "url": f"/v1/jobs/{job_id}/result?format=mp4",
                "content_type": VIDEO,
                "bytes": len(video),
            },
        }
        return JSONResponse(payload)
    return Response(
        video, media_type=VIDEO, headers={"Content-Disposition": f'inline; filename="transfer-{job_id}.mp4"'}
    )


@router.delete(
    "/jobs/{job_id}",
    response_model=JobOut,
    responses={
        202: {"description": "a running job: cancel requested, it stops at its next step"},
        **errors(409, s409="the job already ended"),
    },
)
async def cancel_job(job_id: str, runner: JobsDep, response: Response) -> JobOut:
    """Cancel a job: a queued one ends at once (200); a running one stops at its next step (202)."""
    job = await job_or_404(runner, job_id)
    if job.state in (JobState.SUCCEEDED, JobState.FAILED):
        raise ApiError(
            409,
            "job_already_ended",
            f"job {job_id} already {job.state.value}; there is nothing to cancel",
            "its result stays available until it expires",
        )
    job = await runner.cancel(job_id) or job
    if not job.done:
        response.status_code = 202
    return job_out(job)
