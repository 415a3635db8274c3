"""Open-loop load for `lawm bench serve`: requests fired at Poisson arrival times at a fixed rate,
whatever the server answers (so an overloaded server shows up as growing latency and rejections,
not as a politely slower client), plus what the server's `/metrics` says happened meanwhile.

Latency is measured from each request's *scheduled* send time, so a generator that falls behind
cannot hide queueing (no coordinated omission); `send_lag_p99_ms` says how far behind it fell.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REJECTED = (429, 503, 504)  # overload, shutting down / not ready, deadline


# ----------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class RequestSpec:
    """One request, encoded once and sent as often as the schedule says."""

    method: str
    path: str
    content: bytes
    headers: dict[str, str] = field(default_factory=dict)


def poisson_schedule(rate: float, duration_s: float, seed: int = 0) -> np.ndarray:
    """Send offsets in seconds (sorted, all < duration_s) of a Poisson process with `rate` per second."""
    if rate <= 0 or duration_s <= 0:
        raise ValueError(f"rate and duration must be positive (got rate={rate}, duration={duration_s})")
    rng = np.random.default_rng(seed)
    n = int(rate * duration_s + 6 * math.sqrt(rate * duration_s) + 10)  # enough gaps, with room to spare
    times = np.cumsum(rng.exponential(1.0 / rate, size=n))
    while times[-1] < duration_s:  # astronomically rare; keep the process honest anyway
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1.0 / rate, size=n))])
    return times[times < duration_s]


def _frame_png(frame: np.ndarray) -> bytes:
    from training.data.video import encode_png_strip

    return encode_png_strip(frame[None])


def sample_clip_frames(size: int, fps: float, frames: int, clip: Path | None = None) -> np.ndarray:
    """uint8 `[frames, size, size, 3]` from a real video (default: the sample `carphone_pristine`),
    sampled at the model's fps and size exactly as the server would; repeated if too short."""
    from training.data.samples import sample_clips
    from training.data.video import decode_all

    path = clip if clip is not None else sample_clips()["carphone_pristine"]
    decoded = decode_all(path, fps, size)
    reps = math.ceil(frames / len(decoded))
    return np.concatenate([decoded] * reps)[:frames]


def latent_actions_request(frames: np.ndarray, fps: float, api_key: str | None = None) -> RequestSpec:
    """POST /v1/latent-actions with the clip uploaded as an MP4 at the model's size and fps (what a
    well-behaved client sends: the server decodes it but never resizes or resamples much)."""
    from training.data.video import encode_mp4

    data = encode_mp4(frames, fps)
    boundary = "lawm-bench-boundary"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"clip.mp4\"\r\n"
        f"Content-Type: video/mp4\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", **_auth(api_key),
               "Cache-Control": "no-cache"}  # the same clip every time: measure the engine, not the cache
    return RequestSpec("POST", "/v1/latent-actions", body, headers)


def plan_request(observation: np.ndarray, goal_id: str, api_key: str | None = None, **options: Any) -> RequestSpec:
    """POST /v1/plan: one observation image (the model's size) and a cached goal."""
    body = {"observation": base64.b64encode(_frame_png(observation)).decode(), "goal_id": goal_id, **options}
    return RequestSpec("POST", "/v1/plan", json.dumps(body).encode(),
                       {"Content-Type": "application/json", **_auth(api_key)})


async def post_goal(client: httpx.AsyncClient, image: np.ndarray, api_key: str | None = None) -> str:
    r = await client.post("/v1/goals", json={"image": base64.b64encode(_frame_png(image)).decode()},
                          headers=_auth(api_key))
    r.raise_for_status()
    return str(r.json()["goal_id"])


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


# ----------------------------------------------------------------------------- sending
@dataclass(frozen=True)
class Outcome:
    scheduled: float  # perf_counter() the request was due
    sent: float  # when it actually left (>= scheduled)
    done: float
    status: int  # HTTP status; 0: connection error; -1: client timeout
    timing: dict[str, float] | None = None  # the server's own `timing` breakdown, when it sent one


async def _send(client: httpx.AsyncClient, spec: RequestSpec, scheduled: float, timeout_s: float) -> Outcome:
    sent = time.perf_counter()
    timing = None
    try:
        r = await client.request(spec.method, spec.path, content=spec.content, headers=spec.headers, timeout=timeout_s)
        status = r.status_code
        if status == 200 and r.headers.get("content-type", "").startswith("application/json"):
            timing = r.json().get("timing")
    except httpx.TimeoutException:
        status = -1
    except httpx.HTTPError:
        status = 0
    return Outcome(scheduled, sent, time.perf_counter(), status, timing)


async def open_loop(client: httpx.AsyncClient, spec: RequestSpec, offsets: np.ndarray,
                    timeout_s: float = 60.0) -> tuple[list[Outcome], float]:
    """Fire `spec` at `offsets` (seconds from now) without waiting for answers; all outcomes, and
    the perf_counter() the schedule started at."""
    start = time.perf_counter()
    tasks = []
    for offset in offsets:
        delay = start + float(offset) - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_send(client, spec, start + float(offset), timeout_s)))
    return list(await asyncio.gather(*tasks)), start


def percentile_ms(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q) * 1000.0) if values else None


def summarize(outcomes: list[Outcome], start: float, rate: float) -> dict[str, Any]:
    """Figures of one rate: throughput over the whole run (first send to last answer), latency of the
    successful requests, rejections by status, errors."""
    ok = [o for o in outcomes if 200 <= o.status < 300]
    latencies = [o.done - o.scheduled for o in ok]
    elapsed = max((o.done for o in outcomes), default=start) - start
    rejected = {str(s): sum(o.status == s for o in outcomes) for s in REJECTED}
    row: dict[str, Any] = {
        "rate_rps": rate,
        "sent": len(outcomes),
        "ok": len(ok),
        "throughput_rps": len(ok) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile_ms(latencies, 50),
        "p95_ms": percentile_ms(latencies, 95),
        "p99_ms": percentile_ms(latencies, 99),
        "rejected": sum(rejected.values()),
        "rejected_by_status": rejected,
        "timeouts": sum(o.status == -1 for o in outcomes),
        "errors": sum(not (200 <= o.status < 300) and o.status not in REJECTED for o in outcomes),
        "send_lag_p99_ms": percentile_ms([o.sent - o.scheduled for o in outcomes], 99),
    }
    timings = [o.timing for o in ok if o.timing]
    if timings:  # the server's own breakdown (e.g. decode / encode / idm), mean over successful requests
        row["server_timing_ms"] = {k: 1000.0 * float(np.mean([t[k] for t in timings if k in t])) for k in timings[0]}
    return row


# ----------------------------------------------------------------------------- /metrics
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    from prometheus_client.parser import text_string_to_metric_families

    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(client: httpx.AsyncClient, api_key: str | None = None) -> Samples:
    r = await client.get("/metrics", headers=_auth(api_key))
    r.raise_for_status()
    return parse_metrics(r.text)


def _delta(before: Samples, after: Samples, name: str, component: str) -> float:
    key = (name, (("component", component),))
    return after.get(key, 0.0) - before.get(key, 0.0)


def components_in(samples: Samples) -> list[str]:
    return sorted({dict(labels)["component"] for (name, labels) in samples
                   if name == "lawm_batch_size_count" and "component" in dict(labels)})


def batching_figures(before: Samples, after: Samples, elapsed_s: float,
                     components: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
    """Per component that ran between two scrapes: batches, mean rows per batch, mean queue time per
    request, mean compute time per batch, and the share of the wall time it spent computing."""
    out = {}
    for c in components if components is not None else components_in(after):
        batches = _delta(before, after, "lawm_batch_size_count", c)
        if batches <= 0:
            continue
        queued = _delta(before, after, "lawm_queue_duration_seconds_count", c)
        computing = _delta(before, after, "lawm_compute_duration_seconds_sum", c)
        out[c] = {
            "batches": batches,
            "mean_batch": _delta(before, after, "lawm_batch_size_sum", c) / batches,
            "queue_ms": 1000.0 * _delta(before, after, "lawm_queue_duration_seconds_sum", c) / max(queued, 1.0),
            "compute_ms": 1000.0 * computing / batches,
            "busy": computing / elapsed_s if elapsed_s > 0 else 0.0,
        }
    return out


async def run_rate(client: httpx.AsyncClient, spec: RequestSpec, rate: float, duration_s: float, *, seed: int = 0,
                   timeout_s: float = 60.0, api_key: str | None = None, metrics: bool = True) -> dict[str, Any]:
    """One rate: open-loop load for `duration_s`, then the figures, with the server's batching
    figures from /metrics scraped before and after (unless `metrics` is False)."""
    before = await scrape(client, api_key) if metrics else {}
    outcomes, start = await open_loop(client, spec, poisson_schedule(rate, duration_s, seed), timeout_s)
    row = summarize(outcomes, start, rate)
    if metrics:
        after = await scrape(client, api_key)
        row["components"] = batching_figures(before, after, time.perf_counter() - start)
    return row


def client_for(url: str, concurrency: int = 512) -> httpx.AsyncClient:
    """An HTTP client for open-loop load: enough connections that the pool never throttles the schedule."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(base_url=url, limits=limits, timeout=httpx.Timeout(60.0))
