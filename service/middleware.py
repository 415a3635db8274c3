"""The outermost layer of every request: its id, the body size limits, and the last-resort 500.

- Request id: a client's `X-Request-ID` (if it is a sane token) or a fresh one; stored in
  `scope["state"]["request_id"]`, put in every error body and echoed in the response header.
- Body limits: a declared `Content-Length` over the limit is refused before a byte is read; a
  chunked body is counted as it streams and cut off at the limit. JSON bodies get `max_json_bytes`,
  anything else (uploads) `max_upload_bytes`.
- Body time-out: a body still arriving `body_timeout_s` after the request started is answered 408
  and the connection closed (a client sending a byte a second holds nothing for long).
- Anything unexpected is logged with the request id and answered with a generic 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from service.errors import REQUEST_ID_HEADER, ApiError, error_body

logger = logging.getLogger("lawm.service")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_HEADER = REQUEST_ID_HEADER.lower().encode()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def body_limit(scope: Scope, max_json_bytes: int, max_upload_bytes: int) -> tuple[int, str]:
    content_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        return max_json_bytes, "JSON body"
    return max_upload_bytes, "upload"


def too_large(what: str, size: int | str, limit: int) -> ApiError:
    setting = "LAWM_MAX_JSON_BYTES" if what == "JSON body" else "LAWM_MAX_UPLOAD_BYTES"
    return ApiError(
        413,
        "payload_too_large",
        f"the {what} is {size} bytes; the limit is {limit} bytes",
        f"send less (fewer or smaller frames, a shorter clip); the server's {setting} sets the limit",
    )


def body_too_slow(limit_s: float) -> ApiError:
    return ApiError(
        408,
        "request_timeout",
        f"the request body did not arrive within {limit_s:g} s",
        "send the body at once, or a smaller one (the server's LAWM_BODY_TIMEOUT_S sets the limit)",
    )


class RequestContextMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_json_bytes: int, max_upload_bytes: int, body_timeout_s: float | None = None
    ) -> None:
        self.app = app
        self.max_json_bytes = max_json_bytes
        self.max_upload_bytes = max_upload_bytes
        self.body_timeout_s = body_timeout_s  # the whole body, from the request's start (a slow client's cap)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, _HEADER)
        rid = given if given is not None and _SAFE_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != _HEADER]
                message["headers"] = [*headers, (_HEADER, rid.encode())]
            await send(message)

        limit, what = body_limit(scope, self.max_json_bytes, self.max_upload_bytes)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            err = too_large(what, int(declared), limit)
            await _send_error(send_with_id, err, rid)
            return

        received = 0
        body_done = False
        body_deadline = None if self.body_timeout_s is None else asyncio.get_running_loop().time() + self.body_timeout_s

        async def counted_receive() -> Message:
            nonlocal received, body_done
            if body_done or body_deadline is None:
                message = await receive()  # after the body: waiting for a disconnect is not timed
            else:
                try:
                    message = await asyncio.wait_for(receive(), max(0.0, body_deadline - asyncio.get_running_loop().time()))
                except TimeoutError:
                    raise body_too_slow(self.body_timeout_s or 0.0) from None
            if message["type"] == "http.request":
                body_done = not message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(what, f"more than {limit}", limit)
            return message

        try:
            await self.app(scope, counted_receive, send_with_id)
        except ApiError as err:  # raised by counted_receive outside of a route's handlers
            if started:
                raise
            await _send_error(send_with_id, err, rid)
        except Exception:
            logger.exception("unexpected error while handling %s %s (request id %s)", scope["method"], scope["path"], rid)
            if started:  # the response is half sent: nothing sane to add
                raise
            await _send_error(
                send_with_id,
                ApiError(500, "internal_error", "the server failed unexpectedly; the request id is logged",
                         "retry; if it keeps failing, report the request id"),
                rid,
            )


async def _send_error(send: Send, err: ApiError, rid: str) -> None:
    payload = json.dumps(error_body(err.code, err.message, err.hint, rid)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (err.headers or {}).items()]
    if err.status in (408, 413):
        headers.append((b"connection", b"close"))  # the rest of the body is not read
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
