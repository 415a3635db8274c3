"""The KServe Open Inference Protocol v2 wire format: parse infer requests, build responses.

JSON tensors (`data` flat or nested, row-major) and Triton's binary tensor data extension: the
body is the JSON header (its length in `Inference-Header-Content-Length`) followed by the raw
little-endian bytes of every input that carries `parameters.binary_data_size`, in input order.
Outputs go back as binary when the request asks (`binary_data_output` for all, or per output
`binary_data`), which is what `tritonclient.http` does by default.

No FastAPI here: `service/routes/kserve.py` owns the routes and this module owns the bytes, so the
codec is tested as plain functions. Every problem raises `ProtocolError` with the HTTP status and
a message that names the tensor and says what was expected.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"

# v2 datatype <-> numpy (BYTES is not used by any lawm component)
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
NUMPY_TO_V2 = {v.str: k for k, v in DATATYPES.items()}


class ProtocolError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class TensorMeta:
    """One input or output of a served model, as metadata shows it (-1 = dynamic axis; `axes` keeps
    the exporters' symbolic names: "batch", "steps", "2*steps", "steps-1")."""

    name: str
    datatype: str
    axes: tuple[int | str, ...]

    @property
    def shape(self) -> list[int]:
        return [-1 if isinstance(a, str) else int(a) for a in self.axes]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


@dataclass
class InferRequest:
    inputs: dict[str, np.ndarray]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[tuple[str, bool]] | None = None  # (name, binary) asked for; None = all, by default


def _prod(shape: Sequence[int]) -> int:
    return math.prod(int(s) for s in shape)


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], memoryview]:
    """The JSON header and the binary tail of a request body."""
    if header_length is None:
        header, tail = body, memoryview(b"")
    else:
        try:
            n = int(header_length)
        except ValueError:
            raise ProtocolError(400, f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 < n <= len(body):
            raise ProtocolError(400, f"{HEADER_LENGTH} is {n} but the body has {len(body)} bytes")
        header, tail = body[:n], memoryview(body)[n:]
    try:
        raw = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        hint = "" if header_length is not None else f" (binary tensors need the {HEADER_LENGTH} header)"
        raise ProtocolError(400, f"the request body is not valid JSON: {e}{hint}") from None
    if not isinstance(raw, dict):
        raise ProtocolError(400, "the request body must be a JSON object with an 'inputs' list")
    return raw, tail


def _field(raw: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in raw:
        raise ProtocolError(400, f"{where} has no '{key}'")
    value = raw[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ProtocolError(400, f"{where}.{key} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _decode_tensor(raw: Mapping[str, Any], tail: memoryview, offset: int) -> tuple[str, np.ndarray, int]:
    """One request input -> (name, array, new offset into the binary tail)."""
    name = _field(raw, "name", str, "an input")
    where = f"input '{name}'"
    shape = _field(raw, "shape", list, where)
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise ProtocolError(400, f"{where} has shape {shape}; dimensions must be non-negative integers")
    datatype = _field(raw, "datatype", str, where)
    if datatype not in DATATYPES:
        raise ProtocolError(400, f"{where} has unknown datatype {datatype!r}; known: {', '.join(DATATYPES)}")
    dtype = DATATYPES[datatype]
    params = raw.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        expected = _prod(shape) * dtype.itemsize
        if size != expected:
            raise ProtocolError(
                400,
                f"{where}: binary_data_size is {size} bytes but shape {shape} of {datatype} needs {expected}",
            )
        if offset + size > len(tail):
            raise ProtocolError(
                400, f"{where}: the body ends {offset + size - len(tail)} bytes short of its binary data"
            )
        array = np.frombuffer(tail[offset : offset + size], dtype=dtype.newbyteorder("<")).reshape(shape)
        return (
            name,
            array.astype(dtype, copy=True),
            offset + size,
        )  # a writable copy that does not pin the body
    if "data" not in raw:
        raise ProtocolError(400, f"{where} has neither 'data' nor parameters.binary_data_size")
    try:
        array = np.asarray(raw["data"], dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ProtocolError(400, f"{where}: data is not a list of {datatype} numbers ({e})") from None
    if array.size != _prod(shape):
        raise ProtocolError(
            400, f"{where}: data has {array.size} elements but shape {shape} needs {_prod(shape)}"
        )
    return name, array.reshape(shape), offset


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    raw, tail = split_body(body, header_length)
    inputs_raw = _field(raw, "inputs", list, "the request")
    if not inputs_raw:
        raise ProtocolError(400, "the request has an empty 'inputs' list")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for item in inputs_raw:
        if not isinstance(item, dict):
            raise ProtocolError(
                400, "every entry of 'inputs' must be an object with name, shape, datatype, data"
            )
        name, array, offset = _decode_tensor(item, tail, offset)
        if name in inputs:
            raise ProtocolError(400, f"input '{name}' is given twice")
        inputs[name] = array
    if offset != len(tail):
        raise ProtocolError(
            400, f"the body has {len(tail) - offset} bytes of binary data that no input claims"
        )
    params = raw.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError(400, "'parameters' must be an object")
    default_binary = bool(params.get("binary_data_output", False))
    outputs = None
    if raw.get("outputs") is not None:
        outputs = []
        for item in _field(raw, "outputs", list, "the request"):
            if not isinstance(item, dict):
                raise ProtocolError(400, "every entry of 'outputs' must be an object with a name")
            oname = _field(item, "name", str, "an output")
            oparams = item.get("parameters") or {}
            if "classification" in oparams:
                raise ProtocolError(400, f"output '{oname}': the classification extension is not supported")
            outputs.append((oname, bool(oparams.get("binary_data", default_binary))))
    request_id = raw.get("id")
    return InferRequest(inputs, str(request_id) if request_id is not None else None, params, outputs)


# ----------------------------------------------------------------------------- validation
def check_tensors(
    model: str, specs: Sequence[TensorMeta], inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The protocol-level checks of `inputs` against a model's `specs`: every input present and
    known, v2 datatypes as the model takes them, finite numbers. Shapes are the component's own
    check (`exporters.components.check_inputs`), which the route runs next. Returns contiguous arrays."""
    known = [s.name for s in specs]
    extra = sorted(set(inputs) - set(known))
    if extra:
        raise ProtocolError(400, f"model '{model}' has no input {extra[0]!r}; its inputs are {known}")
    out = {}
    for spec in specs:
        if spec.name not in inputs:
            raise ProtocolError(
                400,
                f"model '{model}' needs input '{spec.name}' ({spec.datatype} {spec.shape}); it is missing",
            )
        array = inputs[spec.name]
        got = NUMPY_TO_V2.get(array.dtype.str, str(array.dtype))
        if got != spec.datatype:
            raise ProtocolError(
                400, f"input '{spec.name}' has datatype {got}; model '{model}' takes {spec.datatype}"
            )
        if spec.datatype.startswith("FP") and not np.isfinite(array).all():
            raise ProtocolError(400, f"input '{spec.name}' contains NaN or infinity; send finite numbers")
        out[spec.name] = np.ascontiguousarray(array)
    return out


# ----------------------------------------------------------------------------- responses
def _encode_output(name: str, array: np.ndarray, binary: bool) -> tuple[dict[str, Any], bytes | None]:
    array = np.ascontiguousarray(array)
    datatype = NUMPY_TO_V2.get(array.dtype.str)
    if datatype is None:
        array, datatype = array.astype(np.float32), "FP32"
    meta: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    if binary:
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        meta["parameters"] = {"binary_data_size": len(data)}
        return meta, data
    meta["data"] = array.reshape(-1).tolist()
    return meta, None


def build_infer_response(
    model: str, version: str, request: InferRequest, outputs: Mapping[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """(body, json header length or None when the whole body is JSON)."""
    if request.outputs is None:
        wanted = [(name, bool(request.parameters.get("binary_data_output", False))) for name in outputs]
    else:
        missing = [name for name, _ in request.outputs if name not in outputs]
        if missing:
            raise ProtocolError(
                400, f"model '{model}' has no output {missing[0]!r}; its outputs are {sorted(outputs)}"
            )
        wanted = request.outputs
    metas, blobs = [], []
    for name, binary in wanted:
        meta, blob = _encode_output(name, outputs[name], binary)
        metas.append(meta)
        if blob is not None:
            blobs.append(blob)
    head: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": metas}
    if request.id is not None:
        head["id"] = request.id
    header = json.dumps(head, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
