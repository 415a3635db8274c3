"""Every error the service answers has one JSON shape, decided here and nowhere else:

    {"error": {"code": "frame_too_large", "message": "...", "hint": "...", "request_id": "..."}}

Routes raise `ApiError(status, code, message, hint)`. The inference and job layers raise domain
errors (`service.inference.errors`: model not ready, missing component, plan rejected, overload,
deadline, ...; `service.jobs.store.StoreUnavailable`) that know nothing of HTTP: `answer_for` maps
each to its status, code and headers, here and only here. Request validation, unknown paths and a
runtime's refusal of tensors map onto the same body. Anything unexpected is logged with the request
id by `service.middleware` and answered 500 without details.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from exporters.errors import InvalidInputs
from service.inference.errors import (
    BatcherClosed,
    DeadlineExceeded,
    InferenceError,
    MalformedInputs,
    MissingComponent,
    ModelNotReady,
    PlanRejected,
    QueueFull,
    RequestTooLarge,
    TooManyPlans,
)
from service.inference.sessions import SessionBusy, StepOutOfOrder, TooManySessions, UnknownSession
from service.jobs.store import StoreUnavailable
from service.methods import allowed_methods

logger = logging.getLogger("lawm.service")

REQUEST_ID_HEADER = "X-Request-ID"


class ApiError(StarletteHTTPException):
    """An error answered to the client as is. Subclasses HTTPException so that FastAPI's body
    parsing (which turns other exceptions into a bare 400) lets it through unchanged."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        hint: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status, detail=message, headers=dict(headers) if headers else None)
        self.status = status
        self.code = code
        self.message = message
        self.hint = hint


def request_id(request: Request) -> str | None:
    """The id `service.middleware` gave this request (echoed in X-Request-ID)."""
    return request.scope.get("state", {}).get("request_id")


def error_body(code: str, message: str, hint: str | None, request_id: str | None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "hint": hint, "request_id": request_id}}


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    hint: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(code, message, hint, request_id(request)), status_code=status, headers=headers)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    """("body", "actions", 0) -> "actions[0]"; the "body"/"query" prefix says nothing to a client."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


# An error body stays small whatever the request: a body of a million bad items is answered with
# the first MAX_FIELD_ERRORS of them, each message cut to MAX_FIELD_MESSAGE characters.
MAX_FIELD_ERRORS = 20
MAX_FIELD_MESSAGE = 200
MAX_MESSAGE = 1000


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def validation_message(errors: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    """A one-line summary naming the failing fields, and the per-field list for the body (both
    bounded: at most MAX_FIELD_ERRORS fields; the total count is in the summary)."""
    fields = [
        {"field": _cut(_location(e.get("loc", ())), MAX_FIELD_MESSAGE),
         "message": _cut(str(e.get("msg", "invalid")), MAX_FIELD_MESSAGE)}
        for e in errors[:MAX_FIELD_ERRORS]
    ]
    shown = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return _cut(f"invalid request: {shown}{more}", MAX_MESSAGE), fields


def is_json_error(errors: list[Any]) -> bool:
    """The body is not JSON the parser accepts (malformed, or nested past the parser's depth limit)."""
    return any(e.get("type") == "json_invalid" for e in errors)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "overloaded",
    503: "unavailable",
    504: "deadline_exceeded",
}


# ----------------------------------------------------------------------------- domain errors
@dataclass(frozen=True)
class HttpAnswer:
    status: int
    code: str
    message: str
    hint: str | None = None
    headers: dict[str, str] | None = None


DomainError = InferenceError | StoreUnavailable | InvalidInputs

# status, code (None: the error's own `reason`), and the hint when the error carries none
_ANSWERS: list[tuple[type[Exception], int, str | None, str | None]] = [
    (ModelNotReady, 503, "not_ready", "retry shortly; GET /readyz says when the server is ready"),
    (MissingComponent, 409, None, None),
    (PlanRejected, 422, None, None),
    (TooManyPlans, 429, "overloaded", None),
    (QueueFull, 429, "overloaded", "the server is overloaded: retry after the Retry-After seconds"),
    (DeadlineExceeded, 504, "deadline_exceeded",
     "the deadline passed before the work was computed: allow a longer deadline or retry later"),
    (BatcherClosed, 503, "shutting_down", "the server is shutting down: retry (another replica will answer)"),
    (RequestTooLarge, 413, "too_large", "send fewer rows (frames, samples) per request"),
    (MalformedInputs, 422, "invalid_input", "see /v1/models for the inputs each component takes"),
    (StoreUnavailable, 503, "jobs_unavailable", None),
    (InvalidInputs, 422, "invalid_input", "GET /v1/models lists each component's inputs"),
    (UnknownSession, 404, None, None),
    (SessionBusy, 409, None, None),
    (StepOutOfOrder, 409, None, None),
    (TooManySessions, 429, None, None),
]
_RETRY_AFTER_S = {ModelNotReady: 1.0, TooManyPlans: 1.0, StoreUnavailable: 5.0}
_RETRY_AFTER_S[TooManySessions] = 1.0


def answer_for(exc: DomainError) -> HttpAnswer:
    """The HTTP answer to a domain error: status, code, message, hint and Retry-After."""
    status, code, hint = next(
        ((status, code, hint) for cls, status, code, hint in _ANSWERS if isinstance(exc, cls)), (500, "internal_error", None)
    )
    retry = (exc.retry_after_s or 1.0) if isinstance(exc, QueueFull) else _RETRY_AFTER_S.get(type(exc))
    headers = {"Retry-After": str(max(1, math.ceil(retry)))} if retry is not None else None
    code = code or str(getattr(exc, "reason", "error"))
    message = _cut(getattr(exc, "message", None) or str(exc) or code, MAX_MESSAGE)
    return HttpAnswer(status, code, message, getattr(exc, "hint", None) or hint, headers)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    answer = answer_for(exc)  # type: ignore[arg-type]  # registered for DomainError's classes only
    return error_response(request, answer.status, answer.code, answer.message, answer.hint, answer.headers)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(request, exc.status, exc.code, _cut(exc.message, MAX_MESSAGE), exc.hint, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if is_json_error(errors):
        return error_response(request, 422, "invalid_json", INVALID_JSON_MESSAGE, INVALID_JSON_HINT)
    message, fields = validation_message(errors)
    body = error_body("invalid_request", message, "fix the named fields; see /docs for the schema", request_id(request))
    body["error"]["fields"] = fields
    body["error"]["field_errors"] = len(errors)
    return JSONResponse(body, status_code=422)


INVALID_JSON_MESSAGE = "the body is not JSON this server can parse (malformed, or nested too deeply)"
INVALID_JSON_HINT = "send valid JSON, nested at most a few levels (see /docs for the schema)"
# Starlette/FastAPI's answer when its JSON parser fails with something else than a syntax error
# (a RecursionError on a deeply nested body): answered as the same invalid_json error.
_BODY_PARSE_FAILED = "There was an error parsing the body"


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _BODY_PARSE_FAILED:
        return error_response(request, 422, "invalid_json", INVALID_JSON_MESSAGE, INVALID_JSON_HINT)
    headers = exc.headers
    hint = "see /docs for the endpoints" if exc.status_code == 404 else None
    if exc.status_code == 405:  # Starlette's Allow names one route's methods; the path may have several
        allow = ", ".join(allowed_methods(request.app.router.routes, request.scope)) or (headers or {}).get("Allow", "")
        if request.method == "OPTIONS":
            return Response(status_code=204, headers={"Allow": allow})
        headers = {**(headers or {}), "Allow": allow}
        hint = f"this path takes {allow}"
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(request, exc.status_code, code, _cut(str(exc.detail), MAX_MESSAGE), hint, headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the JSON error handlers on `app`: ours, FastAPI's validation, Starlette's HTTP errors,
    and the domain errors of the inference and job layers (with a runtime's refusal of tensors)."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for cls in (InferenceError, StoreUnavailable, InvalidInputs):
        app.add_exception_handler(cls, _domain_error)
