"""Bodies of POST /v1/transfers and the job resources (pydantic; they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from service.schemas import MAX_ARRAY_ROWS, Base64Image, RequestBody


class ClipFrames(RequestBody):
    frames: list[Base64Image] = Field(
        min_length=1, max_length=MAX_ARRAY_ROWS, description="the clip's frames in order, at the model's size"
    )


class TransferRequest(RequestBody):
    """POST /v1/transfers as JSON, or the `request` field of a multipart upload of `clip_a` and `clip_b`."""

    clip_a: ClipFrames | None = Field(None, description="the clip whose actions are transferred (JSON form)")
    clip_b: ClipFrames | None = Field(
        None, description="the clip whose first state the actions are applied to"
    )
    steps: int | None = Field(
        None, ge=1, le=4096, description="latent steps of A to transfer (default: all of A's)"
    )
    fps: float | None = Field(
        None, gt=0, le=240, description="frame rate of the rendered MP4 (default: the model's fps)"
    )


class JobLinks(BaseModel):
    self: str
    result: str


class JobOut(BaseModel):
    """A job as GET /v1/jobs/{id} shows it."""

    id: str
    kind: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: float = Field(description="0..1")
    stage: str | None = Field(description="what the job is doing now (encode, rollout, render, cycle, ...)")
    cancel_requested: bool
    created_at: float = Field(description="seconds since the epoch")
    started_at: float | None
    finished_at: float | None
    expires_at: float | None = Field(
        description="when the job and its result are forgotten (job_ttl_s after it ended)"
    )
    timings: dict[str, float] = Field(description="seconds per stage, plus queued_s, run_s, total_s")
    params: dict[str, Any]
    error: dict[str, str] | None = Field(description="{code, message} when the job failed")
    links: JobLinks


class JobList(BaseModel):
    jobs: list[JobOut]
