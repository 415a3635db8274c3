"""KServe Open Inference Protocol v2 (`/v2/...`) over the raw components, so Triton's own clients
(`tritonclient.http`, `perf_analyzer`) work against lawm.

Every component of the served model is a v2 model of the same name ("encoder", "idm",
"world_model", "world_model_step", "decoder", "controller"), at the served version. Inference
goes through the same per-component batchers as /v1, at `Priority.INTERACTIVE`; Triton's request
parameter `timeout` (microseconds) becomes the request's deadline.

Errors follow the protocol, not the /v1 shape: an HTTP status with `{"error": "<message>"}`,
which is what tritonclient reads into `InferenceServerException`.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from exporters.components import check_inputs
from exporters.errors import InvalidInputs
from service.deps import MaybeEngineDep
from service.errors import answer_for
from service.inference.engine import Engine
from service.inference.errors import BatcherError
from service.inference.queue import Priority
from service.kserve_protocol import (
    HEADER_LENGTH,
    ProtocolError,
    TensorMeta,
    build_infer_response,
    check_tensors,
    parse_infer_request,
)
from service.openapi import errors

log = logging.getLogger("lawm.service.kserve")

router = APIRouter(prefix="/v2", tags=["kserve-v2"])

EXTENSIONS = ["binary_tensor_data"]
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan", "torch": "pytorch_libtorch"}
V2_DATATYPES = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "int64": "INT64", "int32": "INT32"}


# Path parameters: any string routes (an unknown one is the protocol's 404); the examples are the
# component names every lawm model has, so a generated client's docs and a fuzzer reach a real one.
Component = Annotated[str, Path(description="a component of the served model (GET /v1/models lists them)",
                                examples=["encoder", "world_model_step"])]
Version = Annotated[str, Path(description="the served model's version", examples=["1"])]


class KServeError(BaseModel):
    """The protocol's error body (what tritonclient reads). The layers in front of the protocol (API
    key, body limits) answer the service's ErrorBody."""

    error: str


def v2_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


_V2_MEANING = {
    400: "a malformed inference request, or tensors that do not fit the model",
    404: "no such model (component) or version",
    413: "more rows than the component takes at once (or a body over the server's limit: ErrorBody)",
    422: "tensors the runtime refused",
    429: "the component's queue is full: retry after the Retry-After seconds",
    500: "an unexpected error: the request id is in the server log",
    503: "the model is loading, warming or shutting down",
    504: "the request's `timeout` parameter passed before the work was computed",
}
# Statuses that the protocol's handlers and the service's outer layers (body limits, the last-resort
# 500) both answer, each with its own body.
_EITHER = {413, 500}


def _either(*models: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"anyOf": [{"$ref": f"#/components/schemas/{m}"} for m in models]}}}


def v2_errors(*statuses: int, ready: type[BaseModel] | None = None) -> dict[int | str, dict[str, Any]]:
    """`responses=` of the protocol's own error answers, with their bodies (the shared statuses and
    the service's error body are added by `service.openapi`). `ready`: the readiness body, which a
    not-ready 503 answers too."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        out[status] = {"model": KServeError, "description": _V2_MEANING[status]}
        if status in _EITHER:
            out[status]["content"] = _either("KServeError", "ErrorBody")
    if ready is not None:
        out[200] = {"model": ready}
        out[503] = {"description": _V2_MEANING[503], "content": _either(ready.__name__, "KServeError")}
    return out


def _metas(specs: Any) -> list[TensorMeta]:
    return [TensorMeta(s.name, V2_DATATYPES.get(s.dtype, s.dtype.upper()), tuple(s.shape)) for s in specs]


def _component(engine: Engine | None, name: str, version: str | None) -> tuple[Engine, Any] | JSONResponse:
    """(engine, component) or the v2 error saying why there is none."""
    if engine is None or engine.model is None:
        return v2_error(
            503, "the model is still loading; retry when /v2/health/ready answers 200", {"Retry-After": "1"}
        )
    model = engine.model
    if name not in model.components:
        return v2_error(
            404,
            f"unknown model '{name}'; this server serves {sorted(model.components)} "
            f"(the components of {model.name} v{model.version})",
        )
    if version is not None and version != str(model.version):
        return v2_error(
            404, f"model '{name}' has no version {version!r}; the served version is {model.version}"
        )
    return engine, model.components[name]


# ----------------------------------------------------------------------------- server
@router.get("", summary="Server metadata")
async def server_metadata() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        lawm_version = version("lawm")
    except PackageNotFoundError:  # running from a source tree without an install
        lawm_version = "0+unknown"
    return {"name": "lawm", "version": lawm_version, "extensions": EXTENSIONS}


@router.get("/health/live", summary="Server liveness")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", summary="Server readiness: every component loaded, verified and warmed",
            responses={200: {"model": ServerReady}, 503: {"model": ServerReady, "description": _V2_MEANING[503]}})
async def ready(engine: MaybeEngineDep) -> JSONResponse:
    is_ready = bool(engine is not None and engine.ready)
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


# ----------------------------------------------------------------------------- models
def _metadata(engine: Engine | None, name: str, version: str | None) -> Any:
    found = _component(engine, name, version)
    if isinstance(found, JSONResponse):
        return found
    engine, component = found
    model = engine.model
    assert model is not None
    return {
        "name": name,
        "versions": [str(model.version)],
        "platform": PLATFORMS.get(model.runtime, model.runtime),
        "inputs": [m.to_json() for m in _metas(component.inputs)],
        "outputs": [m.to_json() for m in _metas(component.outputs)],
        "parameters": {"model": model.name, "max_batch_size": int(component.max_batch)},
    }


@router.get("/models/{name}", summary="Model metadata (one served component)", responses=v2_errors(404, 503))
async def model_metadata(engine: MaybeEngineDep, name: Component) -> Any:
    return _metadata(engine, name, None)


@router.get("/models/{name}/versions/{version}", summary="Model metadata at a version", responses=v2_errors(404, 503))
async def model_version_metadata(engine: MaybeEngineDep, name: Component, version: Version) -> Any:
    return _metadata(engine, name, version)


def _model_ready(engine: Engine | None, name: str, version: str | None) -> JSONResponse:
    found = _component(engine, name, version)
    if isinstance(found, JSONResponse):
        return found
    engine, _ = found
    is_ready = engine.ready
    return JSONResponse({"name": name, "ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/models/{name}/ready", summary="Model readiness", responses=v2_errors(404, ready=ModelReady))
async def model_ready(engine: MaybeEngineDep, name: Component) -> JSONResponse:
    return _model_ready(engine, name, None)


@router.get("/models/{name}/versions/{version}/ready", summary="Model readiness at a version",
            responses=v2_errors(404, ready=ModelReady))
async def model_version_ready(engine: MaybeEngineDep, name: Component, version: Version) -> JSONResponse:
    return _model_ready(engine, name, version)


# ----------------------------------------------------------------------------- inference
async def _infer(request: Request, engine: Engine | None, name: str, version: str | None) -> Response:
    found = _component(engine, name, version)
    if isinstance(found, JSONResponse):
        return found
    engine, component = found
    assert engine.model is not None
    if not engine.ready:
        return v2_error(503, "the model is not ready yet (warming up or shutting down)", {"Retry-After": "1"})
    try:
        parsed = parse_infer_request(await request.body(), request.headers.get(HEADER_LENGTH))
        arrays = check_tensors(name, _metas(component.inputs), parsed.inputs)
        check_inputs(name, component.inputs, arrays, engine.model.profiles.get(name))
        deadline = _deadline(parsed.parameters)
        outputs = await engine.run(name, arrays, Priority.INTERACTIVE, deadline)
        body, header_length = build_infer_response(name, str(engine.model.version), parsed, outputs)
    except ProtocolError as e:
        return v2_error(e.status, e.message)
    except InvalidInputs as e:  # the protocol's own answer to tensors that do not fit: 400
        return v2_error(400, str(e))
    except BatcherError as e:
        answer = answer_for(e)
        return v2_error(answer.status, answer.message, answer.headers)
    except Exception:
        request_id = request.scope.get("state", {}).get("request_id")
        log.exception("v2 infer on %s failed (request %s)", name, request_id)
        return v2_error(500, f"internal error (request id {request_id}); see the server log")
    if header_length is None:
        return Response(body, media_type="application/json")
    return Response(body, media_type="application/octet-stream", headers={HEADER_LENGTH: str(header_length)})


def _deadline(parameters: dict[str, Any]) -> float | None:
    """Triton's `timeout` request parameter (microseconds) -> an absolute monotonic deadline."""
    timeout = parameters.get("timeout")
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ProtocolError(
            400, f"parameters.timeout is in microseconds and must be a positive number, got {timeout!r}"
        )
    return time.monotonic() + float(timeout) / 1e6


# 408: the service's body time-out (ErrorBody), as the body is read
_INFER_ERRORS = {**v2_errors(400, 404, 413, 422, 429, 500, 503, 504), **errors(408)}


@router.post("/models/{name}/infer", summary="Inference (JSON or binary tensors)", responses=_INFER_ERRORS)
async def infer(request: Request, engine: MaybeEngineDep, name: Component) -> Response:
    return await _infer(request, engine, name, None)


@router.post("/models/{name}/versions/{version}/infer", summary="Inference at a version", responses=_INFER_ERRORS)
async def infer_version(request: Request, engine: MaybeEngineDep, name: Component, version: Version) -> Response:
    return await _infer(request, engine, name, version)
