"""The OpenAPI document generated clients are built from (`/openapi.json`): FastAPI's own, completed
with what FastAPI cannot see in the route signatures.

- Bodies that routes read themselves (`service.schemas.openapi_body`) get their schemas defined.
- Every status an operation can answer is documented, each error with the one error body (ErrorBody).
  The statuses that come from the layers every request passes (auth, body limits, body parsing, the
  engine and job runner dependencies) are derived here, from what the operation takes; a route adds
  only the statuses of its own logic (`responses=errors(409, ...)`). No `4XX`/`5XX` ranges: a client
  can switch on exact statuses, and the schemathesis test checks that the server answers no status the
  document leaves out.
- With API keys on, bearer security is declared on the operations that need a key (with 401).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from service.deps import get_engine, get_jobs
from service.schemas import REQUEST_MODELS, ErrorBody

ERROR_REF = "#/components/schemas/ErrorBody"
SECURITY_SCHEME = "bearer"

# What each status means on this service (docs/api.md lists the codes behind each).
DESCRIPTIONS: dict[int, str] = {
    400: "a malformed request: an empty upload, a multipart body with too many parts or fields",
    401: "a missing or invalid API key: send `Authorization: Bearer <key>`",
    404: "nothing by that id",
    406: "the Accept header asks for a format this operation cannot answer",
    408: "the request body did not arrive within the server's LAWM_BODY_TIMEOUT_S",
    409: "a conflict with the state of the model or the resource",
    413: "the body or an upload is over the server's limits (bytes, frames, pixels, duration, rows)",
    415: "a Content-Type, container or codec this operation does not take",
    416: "a byte range outside the file",
    422: "a well-formed request with invalid content: the error names the failing fields",
    429: "overloaded: retry after the Retry-After seconds",
    500: "an unexpected error: the request id is in the server log",
    503: "not ready (loading, warming), shutting down, or a dependency is down: retry after the Retry-After seconds",
    504: "the deadline passed before the work was computed",
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}


def errors(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """A route's own error statuses for its `responses=`; `descriptions` (`s409="..."`) say what each
    means on that route. The error body, headers and the shared statuses are added by `build_openapi`."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        out[status] = {"description": descriptions.get(f"s{status}", DESCRIPTIONS[status])}
    return out


# ----------------------------------------------------------------------------- derived statuses
def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _validated(parameter: dict[str, Any]) -> bool:
    """Whether FastAPI can refuse the parameter (422): a required query or header one (missing), or
    one whose schema is more than a plain string."""
    schema = parameter.get("schema", {})
    plain = schema.get("type") == "string" and set(schema) <= {"type", "title", "description", "examples"}
    missing = parameter.get("in") != "path" and parameter.get("required", False)
    return missing or not plain


def _routes(app: FastAPI) -> Iterator[Any]:
    """The app's routes, flat: FastAPI 0.16x keeps an included router as one entry (its own walk, when
    there is one, yields each route in its context, with the path and dependencies it has there)."""
    walk = getattr(fastapi.routing, "iter_route_contexts", None)
    yield from walk(app.routes) if walk is not None else app.routes


def shared_statuses(route: Any, operation: dict[str, Any], *, auth: bool) -> set[int]:
    """The statuses that come from the layers in front of the route's own logic."""
    statuses = {413, 500}  # a declared Content-Length over the limit (any request), anything unexpected
    if auth:
        statuses.add(401)
    body = operation.get("requestBody", {}).get("content", {})
    if body:  # the body is read: too slow, of a type not taken, or not valid
        statuses |= {408, 415, 422}
        if set(body) - {"application/json"}:
            statuses.add(400)  # an empty upload, a multipart body Starlette refuses
    parameters = operation.get("parameters", [])
    if any(p.get("in") == "path" for p in parameters):
        statuses.add(404)
    if any(_validated(p) for p in parameters):
        statuses.add(422)
    calls = set(_calls(route.dependant))
    if get_engine in calls or get_jobs in calls:
        statuses.add(503)  # the model not ready, or the job runner not started or its store down
    return statuses


def _error_response(status: int, declared: dict[str, Any] | None) -> dict[str, Any]:
    """The response object of an error status: the route's own description and content when it
    declared a body of its own (e.g. /readyz, KServe v2), else the one error body."""
    declared = declared or {}
    response = {"description": declared.get("description") or DESCRIPTIONS.get(status, "an error")}
    content = declared.get("content") or {"application/json": {"schema": {"$ref": ERROR_REF}}}
    response["content"] = content
    if status in HEADERS:
        response["headers"] = {**HEADERS[status], **declared.get("headers", {})}
    return response


def document_errors(app: FastAPI, schema: dict[str, Any], auth_exempt: Collection[str] | None) -> None:
    """Every error status of every operation, with its body; `auth_exempt` None: no API keys."""
    for route in _routes(app):
        if not getattr(route, "include_in_schema", False) or getattr(route, "dependant", None) is None:
            continue
        auth = auth_exempt is not None and (route.path_format.rstrip("/") or "/") not in auth_exempt
        for method in route.methods:
            operation = schema["paths"][route.path_format][method.lower()]
            responses = operation.setdefault("responses", {})
            # FastAPI adds a 422 to every operation with parameters; it stays only where one can fail
            if "HTTPValidationError" in json.dumps(responses.get("422", {})):
                del responses["422"]
            statuses = shared_statuses(route, operation, auth=auth) | {int(s) for s in responses if s[0] in "45"}
            for status in sorted(statuses):
                responses[str(status)] = _error_response(status, responses.get(str(status)))
            operation["responses"] = dict(sorted(responses.items()))
            if auth:
                operation["security"] = [{SECURITY_SCHEME: []}]
    components = schema.setdefault("components", {})
    if auth_exempt is not None:
        components["securitySchemes"] = {
            SECURITY_SCHEME: {"type": "http", "scheme": "bearer", "description": "one of the server's LAWM_API_KEYS"}
        }
    if "HTTPValidationError" not in json.dumps(schema["paths"]):
        for unused in ("HTTPValidationError", "ValidationError"):
            components.get("schemas", {}).pop(unused, None)


def build_openapi(app: FastAPI, auth_exempt: Collection[str] | None) -> dict[str, Any]:
    """FastAPI's schema plus the bodies of routes that read their body themselves, and every error."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    _, defs = models_json_schema(
        [(m, "validation") for m in (*REQUEST_MODELS, ErrorBody)], ref_template="#/components/schemas/{model}"
    )
    schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
    document_errors(app, schema, auth_exempt)
    app.openapi_schema = schema
    return schema
