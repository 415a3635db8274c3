"""A Python client for robot code: plan sessions, one-shot plans, goals and latent actions.

Sync (`Client`) and async (`AsyncClient`) over httpx, with typed answers (frozen dataclasses,
arrays as numpy), server errors raised as `LawmError` (status, code, message, hint), and retries of
429 and 503 answers that wait what the server's `Retry-After` says (capped by `max_wait_s`) instead
of hammering an overloaded server. Only numpy and httpx are needed: frames go as .npy bodies and
goal images as PNGs written here, so a robot needs no video libraries.

    with Client("http://127.0.0.1:8000", api_key=KEY) as lawm:
        session = lawm.create_session(goal=goal_image, control_period_ms=250)
        for _ in range(100):
            step = lawm.step(session.session_id, camera.read())   # uint8 [H, W, 3]
            robot.apply(step.actions_now[0])
        lawm.end_session(session.session_id)
"""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

RETRY_STATUSES = (429, 503)


class LawmError(Exception):
    """An error answer of the service: its HTTP status and the body's code, message and hint."""

    def __init__(self, status: int, code: str, message: str, hint: str | None = None,
                 request_id: str | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" ({hint})" if hint else ""))
        self.status, self.code, self.message, self.hint = status, code, message, hint
        self.request_id, self.retry_after_s = request_id, retry_after_s


@dataclass(frozen=True)
class Session:
    session_id: str
    goal_id: str
    planner: dict[str, Any]
    warm_planner: dict[str, Any]
    execute: int
    ttl_s: float
    expires_in_s: float
    steps: int
    control_period_ms: float | None = None
    cold_deadline_ms: float | None = None


@dataclass(frozen=True)
class Step:
    session_id: str
    step: int
    warm: bool
    actions_now: np.ndarray  # [execute, A]: execute these now
    actions: np.ndarray  # [H, A]: the whole plan
    cost: float | None
    deadline_hit: bool
    timing: dict[str, float] = field(default_factory=dict)
    ahead: bool = False  # the plan searched ahead from the predicted state (plan_ahead sessions)
    ahead_error: float | None = None  # relative error of that prediction against this frame's state


@dataclass(frozen=True)
class Plan:
    actions: np.ndarray  # [H, A]
    first_action: np.ndarray  # [A]
    cost: float | None
    goal_id: str
    deadline_hit: bool
    timing: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LatentActions:
    latents: np.ndarray  # [steps, Z]
    start_s: list[float]
    end_s: list[float]
    fps: float


# ----------------------------------------------------------------------------- encoding
def png_bytes(image: np.ndarray) -> bytes:
    """uint8 `[H, W, 3]` -> a PNG (stored with zlib, no image library needed)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"images are uint8 [H, W, 3], got shape {image.shape}")
    h, w, _ = image.shape
    raw = b"".join(b"\x00" + image[y].tobytes() for y in range(h))  # filter type 0 on each row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _b64_image(image: np.ndarray | bytes) -> str:
    return base64.b64encode(image if isinstance(image, bytes) else png_bytes(image)).decode()


def _npy(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(frame, dtype=np.uint8), allow_pickle=False)
    return buf.getvalue()


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# ----------------------------------------------------------------------------- requests and answers
@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    kwargs: dict[str, Any]


def _session_call(goal: np.ndarray | bytes | None, goal_id: str | None, **settings: Any) -> _Call:
    if (goal is None) == (goal_id is None):
        raise ValueError("give exactly one of goal (an image) or goal_id")
    body = _drop_none({"goal": None if goal is None else _b64_image(goal), "goal_id": goal_id, **settings})
    if body.get("overrides") is None:
        body.pop("overrides", None)
    return _Call("POST", "/v1/sessions", {"json": body})


def _step_call(session_id: str, frame: np.ndarray, step: int | None) -> _Call:
    params = {} if step is None else {"step": step}
    return _Call("POST", f"/v1/sessions/{session_id}/step",
                 {"content": _npy(frame), "headers": {"Content-Type": "application/x-npy"}, "params": params})


def _plan_call(observation: np.ndarray | bytes, goal: np.ndarray | bytes | None, goal_id: str | None,
               **settings: Any) -> _Call:
    if (goal is None) == (goal_id is None):
        raise ValueError("give exactly one of goal (an image) or goal_id")
    body = _drop_none({"observation": _b64_image(observation), "goal": None if goal is None else _b64_image(goal),
                       "goal_id": goal_id, **settings})
    return _Call("POST", "/v1/plan", {"json": body})


def _latents_call(video: str | Path | bytes, content_type: str) -> _Call:
    data = Path(video).read_bytes() if isinstance(video, str | Path) else video
    return _Call("POST", "/v1/latent-actions", {"content": data, "headers": {"Content-Type": content_type}})


def _session(body: dict[str, Any]) -> Session:
    return Session(**{k: body[k] for k in Session.__dataclass_fields__ if k in body})


def _step(body: dict[str, Any]) -> Step:
    return Step(
        session_id=body["session_id"], step=body["step"], warm=body["warm"],
        actions_now=np.asarray(body["actions_now"], np.float32), actions=np.asarray(body["actions"], np.float32),
        cost=body["cost"], deadline_hit=body["deadline_hit"], timing=body["timing"],
        ahead=body.get("ahead", False), ahead_error=body.get("ahead_error"),
    )


def _plan(body: dict[str, Any]) -> Plan:
    return Plan(
        actions=np.asarray(body["actions"], np.float32), first_action=np.asarray(body["first_action"], np.float32),
        cost=body["cost"], goal_id=body["goal_id"], deadline_hit=body["deadline_hit"], timing=body["timing"],
    )


def _latents(body: dict[str, Any]) -> LatentActions:
    return LatentActions(latents=np.asarray(body["latents"], np.float32).reshape(-1, body["latent_dim"]),
                         start_s=body["start_s"], end_s=body["end_s"], fps=body["fps"])


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: not sent by this service; wait the default
        return None


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        error = {"code": "http_error", "message": response.text[:200]}
    raise LawmError(response.status_code, error.get("code", "error"), error.get("message", ""), error.get("hint"),
                    error.get("request_id"), _retry_after(response))


class _Retrying:
    """The retry policy both clients share: which answers to retry and how long to wait."""

    def __init__(self, retries: int, max_wait_s: float, default_wait_s: float) -> None:
        self.retries, self.max_wait_s, self.default_wait_s = retries, max_wait_s, default_wait_s

    def wait_for(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying `response`, or None to give it back to the caller."""
        if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
            return None
        wait = _retry_after(response)
        return min(self.max_wait_s, wait if wait is not None else self.default_wait_s * 2**attempt)


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class Client(_Retrying):
    """Synchronous client. `retries` 429/503 answers, waiting their Retry-After (at most `max_wait_s`)."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, api_key: str | None = None, timeout_s: float = 30.0,
                 retries: int = 3, max_wait_s: float = 10.0, default_wait_s: float = 0.5,
                 http: httpx.Client | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(retries, max_wait_s, default_wait_s)
        self.http = http or httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout_s)
        self.sleep = sleep

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _send(self, call: _Call) -> httpx.Response:
        attempt = 0
        while True:
            response = self.http.request(call.method, call.path, **call.kwargs)
            wait = self.wait_for(response, attempt)
            if wait is None:
                _raise_for(response)
                return response
            self.sleep(wait)
            attempt += 1

    def create_session(self, *, goal: np.ndarray | bytes | None = None, goal_id: str | None = None,
                       **settings: Any) -> Session:
        """Open a plan session. `settings`: preset, action_low, action_high, overrides, warm_samples,
        warm_iterations, control_period_ms, cold_deadline_ms, ttl_s, execute, history_context, plan_ahead, ahead_tolerance
        (see docs/api.md)."""
        return _session(self._send(_session_call(goal, goal_id, **settings)).json())

    def step(self, session_id: str, frame: np.ndarray, step: int | None = None) -> Step:
        """Send the newest frame (uint8 `[H, W, 3]`, the model's size); get the action(s) to execute."""
        return _step(self._send(_step_call(session_id, frame, step)).json())

    def session(self, session_id: str) -> Session:
        return _session(self._send(_Call("GET", f"/v1/sessions/{session_id}", {})).json())

    def end_session(self, session_id: str) -> None:
        self._send(_Call("DELETE", f"/v1/sessions/{session_id}", {}))

    def plan(self, observation: np.ndarray | bytes, *, goal: np.ndarray | bytes | None = None,
             goal_id: str | None = None, **settings: Any) -> Plan:
        """One stateless plan (POST /v1/plan). `settings`: preset, action_low, action_high, overrides, deadline_ms."""
        return _plan(self._send(_plan_call(observation, goal, goal_id, **settings)).json())

    def register_goal(self, image: np.ndarray | bytes) -> str:
        """POST /v1/goals: the goal's id, for sessions and plans."""
        return self._send(_Call("POST", "/v1/goals", {"json": {"image": _b64_image(image)}})).json()["goal_id"]

    def latent_actions(self, video: str | Path | bytes, content_type: str = "video/mp4") -> LatentActions:
        """A video file (path or bytes) -> its latent actions."""
        return _latents(self._send(_latents_call(video, content_type)).json())


class AsyncClient(_Retrying):
    """The same as `Client`, for asyncio code."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, api_key: str | None = None, timeout_s: float = 30.0,
                 retries: int = 3, max_wait_s: float = 10.0, default_wait_s: float = 0.5,
                 http: httpx.AsyncClient | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        super().__init__(retries, max_wait_s, default_wait_s)
        self.http = http or httpx.AsyncClient(base_url=base_url, headers=_headers(api_key), timeout=timeout_s)
        self.sleep = sleep

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _send(self, call: _Call) -> httpx.Response:
        attempt = 0
        while True:
            response = await self.http.request(call.method, call.path, **call.kwargs)
            wait = self.wait_for(response, attempt)
            if wait is None:
                _raise_for(response)
                return response
            await self.sleep(wait)
            attempt += 1

    async def create_session(self, *, goal: np.ndarray | bytes | None = None, goal_id: str | None = None,
                             **settings: Any) -> Session:
        return _session((await self._send(_session_call(goal, goal_id, **settings))).json())

    async def step(self, session_id: str, frame: np.ndarray, step: int | None = None) -> Step:
        return _step((await self._send(_step_call(session_id, frame, step))).json())

    async def session(self, session_id: str) -> Session:
        return _session((await self._send(_Call("GET", f"/v1/sessions/{session_id}", {}))).json())

    async def end_session(self, session_id: str) -> None:
        await self._send(_Call("DELETE", f"/v1/sessions/{session_id}", {}))

    async def plan(self, observation: np.ndarray | bytes, *, goal: np.ndarray | bytes | None = None,
                   goal_id: str | None = None, **settings: Any) -> Plan:
        return _plan((await self._send(_plan_call(observation, goal, goal_id, **settings))).json())

    async def register_goal(self, image: np.ndarray | bytes) -> str:
        response = await self._send(_Call("POST", "/v1/goals", {"json": {"image": _b64_image(image)}}))
        return response.json()["goal_id"]

    async def latent_actions(self, video: str | Path | bytes, content_type: str = "video/mp4") -> LatentActions:
        return _latents((await self._send(_latents_call(video, content_type))).json())
