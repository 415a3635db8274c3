"""Service settings from `LAWM_*` environment variables (and `lawm serve` flags), validated at start.

Routes read them through the cached `get_settings()` dependency (FastAPI's "settings in a
dependency"), never through an import-time singleton, so tests and `create_app(settings)` can swap
them. Lists (`LAWM_API_KEYS`, `LAWM_AUTH_EXEMPT`) take a comma-separated string or a JSON list.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Runtime = Literal["torch", "onnxruntime", "tensorrt"]
MiB = 1 << 20


def _split_list(value: Any) -> Any:
    """`"a, b"` or `'["a", "b"]'` -> `["a", "b"]`; lists pass through."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything `lawm serve` can be told; each field is `LAWM_<NAME>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="LAWM_", extra="ignore", env_ignore_empty=True)

    # --- where and what to serve
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)  # 0: any free port (tests)
    repo: Path = Path("models/repository")  # exported model repository (REPO/<model>/<version>/)
    model: str = "demo"
    version: int | None = Field(1, ge=1)  # None (or "latest"): the highest version in the repository
    runtime: Runtime = "onnxruntime"
    device: str = "cpu"  # cpu | cuda | cuda:N
    # The planner's components on the torch runtime: fp32; bf16 (autocast); or auto, the choice
    # `lawm bench precision --record` made for the served version by plan parity (fp32 where none).
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    # Serve a checkpoint directly on torch instead of a repository version (no export needed).
    checkpoint: Path | None = None
    fps: float | None = Field(None, gt=0)  # override the frame rate read from the model's manifest
    # Checkpoint exported into `repo` on first start when the served version is missing there
    # (unset: the bundled models/demo, for the model named "demo").
    export_from: Path | None = None

    # --- batching (one batcher per component)
    max_batch_size: int = Field(32, ge=1, le=4096)  # rows per batch for clip-level components
    plan_max_batch_size: int = Field(512, ge=1, le=65536)  # rows per batch for the planner's components
    max_queue_delay_ms: float = Field(5.0, ge=0, le=10_000)
    max_queue_rows: int = Field(4096, ge=1)  # queued rows per component before 429
    # work queued ahead of a request (at its priority and above, at the measured time per row) above
    # this answers 429 at once, with Retry-After: shed load instead of queueing it for minutes
    max_queue_wait_s: float = Field(0.5, gt=0)
    # the same for the planner's components: a plan sends hundreds of rows per iteration, and
    # refusing one mid-search throws away the iterations it already ran
    plan_max_queue_wait_s: float = Field(2.0, gt=0)

    # --- auth: bearer API keys; empty means no auth
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    auth_exempt: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["/livez", "/readyz", "/metrics"])

    # --- input limits
    max_upload_bytes: int = Field(64 * MiB, ge=1)
    max_frames: int = Field(256, ge=2)  # frames after sampling at the model's fps
    max_pixels: int = Field(4096 * 4096, ge=1)  # width * height of one source frame
    max_duration_s: float = Field(300.0, gt=0)
    max_json_bytes: int = Field(16 * MiB, ge=1)
    # Uploaded video smaller than the model's crop: "resize" it up (answers say `resized_from`), or
    # "refuse" it (422 video_too_small) where upscaled frames would mislead more than they help.
    small_videos: Literal["resize", "refuse"] = "resize"
    max_rollout_steps: int = Field(64, ge=1)
    max_goals: int = Field(1024, ge=1)  # cached goal states (least recently used are dropped)
    max_plan_rows: int = Field(100_000, ge=1)  # samples x horizon x iterations of one plan
    max_concurrent_plans: int = Field(32, ge=1)  # plans searching at once (each holds a thread)
    # --- plan sessions (per replica: see service.inference.sessions)
    max_sessions: int = Field(64, ge=1)  # open sessions at once; more are answered 429
    session_ttl_s: float = Field(300.0, gt=0)  # default lifetime of an unused session
    max_session_ttl_s: float = Field(3600.0, gt=0)  # the longest TTL a client may ask for

    # --- admission before the bottleneck: uploads decode in a stage of their own
    decode_concurrency: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)  # decodes at once
    decode_max_backlog_frames: int = Field(20_000, ge=1)  # source frames admitted and not yet decoded
    # a backlog estimated to take longer answers 429 at once: about the latency of a request at 0.8x
    # saturation, so what is admitted past saturation waits little more than it would below it
    decode_max_wait_s: float = Field(0.25, gt=0)
    # CPU work (decode, model, planning) runs in threads this much nicer than the event loop, so that
    # 429s at the door and /livez answer at once while every core is busy (service.inference.threads)
    worker_nice: int = Field(5, ge=0, le=19)

    # --- slow and numerous clients (see service.server)
    header_timeout_s: float = Field(10.0, gt=0)  # a connection's first request headers must arrive within this
    body_timeout_s: float = Field(120.0, gt=0)  # a request's body must arrive within this of its start (408)
    keep_alive_timeout_s: float = Field(5.0, gt=0)  # an idle kept-alive connection is closed after this
    max_connections: int | None = Field(1000, ge=1)  # open connections + requests in flight; past it 503

    # --- start-up (see service.inference.warmup)
    # "serving": warm the batch sizes up to warmup_max_batch and the context lengths requests use;
    # "all": every batch size each batcher can form and every context length (slow, more memory).
    warmup: Literal["serving", "all"] = "serving"
    warmup_max_batch: int = Field(32, ge=1)  # largest batch warmed per component; larger ones warm on first use
    # onnxruntime's CPU memory for activations: one arena "shared" by every component's session (the
    # least memory at full speed), an arena per "session" (its default), or "off" (no arena).
    ort_arena: Literal["shared", "session", "off"] = "shared"

    # --- lifecycle and jobs
    drain_timeout_s: float = Field(30.0, ge=0)
    job_ttl_s: float = Field(3600.0, gt=0)
    max_queued_jobs: int = Field(8, ge=1)  # jobs queued or running before POST /v1/transfers answers 429
    # --- scale-out: jobs and caches on Redis when redis_url is set; otherwise in-process
    redis_url: str | None = None  # e.g. redis://redis:6379/0
    redis_prefix: str = Field("lawm", pattern=r"^[A-Za-z0-9_.-]+$")  # keys are "{prefix}:..." (one cluster slot)
    redis_timeout_s: float = Field(2.0, gt=0)  # connect/command timeout: a down Redis answers 503 this fast
    job_visibility_timeout_s: float = Field(60.0, gt=0)  # a job unclaimed this long by its worker is reclaimed
    job_max_attempts: int = Field(3, ge=1)  # worker starts of one job before it goes to the dead-letter stream
    redis_result_max_bytes: int = Field(16 * MiB, ge=0)  # larger renders go to result_dir (a shared volume)
    result_dir: Path | None = None  # shared volume for renders above redis_result_max_bytes
    worker_concurrency: int = Field(1, ge=1)  # jobs one `lawm worker` runs at once
    worker_heartbeat_s: float = Field(5.0, gt=0)  # worker liveness + keeping its jobs claimed
    worker_port: int = Field(8001, ge=0, le=65535)  # `lawm worker`'s /livez, /readyz, /metrics
    cache_size: int = Field(4096, ge=0)  # latent-action results kept in this process (0: no cache)
    cache_ttl_s: float = Field(3600.0, gt=0)  # lifetime of shared (Redis) cache entries

    @field_validator("version", mode="before")
    @classmethod
    def _latest(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() == "latest" else value

    @field_validator("api_keys", "auth_exempt", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        for i, key in enumerate(keys):
            if len(key) < 16:
                raise ValueError(
                    f"api_keys[{i}] is {len(key)} characters; use keys of at least 16 random characters "
                    "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
                )
        return keys

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis_url must look like redis://HOST:6379/0 (or rediss://, unix://), got {url!r}")
        return url

    @field_validator("auth_exempt")
    @classmethod
    def _paths(cls, paths: list[str]) -> list[str]:
        bad = [p for p in paths if not p.startswith("/")]
        if bad:
            raise ValueError(f"auth_exempt entries are URL paths starting with '/', got {bad}")
        return paths

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.redis_url is not None and self.job_visibility_timeout_s < 2 * self.worker_heartbeat_s:
            raise ValueError(
                f"job_visibility_timeout_s ({self.job_visibility_timeout_s}) must be at least twice "
                f"worker_heartbeat_s ({self.worker_heartbeat_s}): a live worker renews its claim every heartbeat"
            )
        if self.max_json_bytes > self.max_upload_bytes:
            raise ValueError(
                f"max_json_bytes ({self.max_json_bytes}) must not exceed max_upload_bytes ({self.max_upload_bytes})"
            )
        return self

    @property
    def model_dir(self) -> Path:
        return self.repo / self.model


@lru_cache
def get_settings() -> Settings:
    """The process's settings (read once from the environment); override in tests with
    `app.dependency_overrides[get_settings]` or pass `Settings(...)` to `create_app`."""
    return Settings()
