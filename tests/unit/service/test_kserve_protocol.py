"""The v2 codec: JSON and binary tensors in, checks against the component's specs, responses out."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.http import InferInput, InferRequestedOutput, InferResult
from tritonclient.http._utils import _get_inference_request

from service.kserve_protocol import (
    InferRequest,
    ProtocolError,
    TensorMeta,
    build_infer_response,
    check_tensors,
    parse_infer_request,
)

STEP = (TensorMeta("states", "FP32", ("batch", 4, 8)), TensorMeta("latents", "FP32", ("batch", 3)))
ENCODER = (TensorMeta("video", "FP32", ("batch", "2*steps", 3, 8, 8)),)
IDM_OUT = (TensorMeta("latents", "FP32", ("batch", "steps-1", 3)),)


def triton_body(
    arrays: dict[str, np.ndarray], binary: bool, outputs: list[InferRequestedOutput] | None = None
):
    """The exact bytes tritonclient.http sends (and its header length)."""
    inputs = []
    for name, array in arrays.items():
        tensor = InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return _get_inference_request(inputs, "req-1", outputs, 0, False, False, 0, None, None)


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_requests_parse_to_the_same_arrays(binary: bool) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "states": rng.standard_normal((2, 4, 8), dtype=np.float32),
        "latents": rng.standard_normal((2, 3), dtype=np.float32),
    }
    body, header_length = triton_body(arrays, binary)
    assert (header_length is not None) is binary
    request = parse_infer_request(body, None if header_length is None else str(header_length))
    checked = check_tensors("world_model_step", STEP, request.inputs)
    for name, array in arrays.items():
        np.testing.assert_array_equal(checked[name], array)
    assert request.id == "req-1" and request.outputs is None
    assert request.parameters.get("binary_data_output") is True  # tritonclient's default with no outputs


@pytest.mark.parametrize("binary", [False, True])
def test_responses_read_back_through_tritonclient(binary: bool) -> None:
    out = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    request = InferRequest(inputs={}, id="abc", outputs=[("next_states", binary)])
    body, header_length = build_infer_response(
        "world_model_step", "1", request, {"next_states": out, "unused": out}
    )
    result = InferResult.from_response_body(body, header_length=header_length)
    np.testing.assert_array_equal(result.as_numpy("next_states"), out)
    head = result.get_response()
    assert head["model_name"] == "world_model_step" and head["id"] == "abc"
    assert [o["name"] for o in head["outputs"]] == ["next_states"]  # only what was asked for


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    binary=st.booleans(),
    nested=st.booleans(),
)
def test_any_fp32_tensor_round_trips(shape: list[int], binary: bool, nested: bool) -> None:
    array = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32)
    if binary:
        head = {
            "inputs": [
                {
                    "name": "x",
                    "shape": shape,
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": array.nbytes},
                }
            ]
        }
        header = json.dumps(head).encode()
        request = parse_infer_request(header + array.tobytes(), str(len(header)))
    else:
        data = array.tolist() if nested else array.reshape(-1).tolist()
        body = json.dumps(
            {"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": data}]}
        ).encode()
        request = parse_infer_request(body, None)
    np.testing.assert_array_equal(request.inputs["x"], array)
    response, n = build_infer_response("m", "1", InferRequest({}, outputs=[("y", binary)]), {"y": array})
    np.testing.assert_array_equal(
        InferResult.from_response_body(response, header_length=n).as_numpy("y"), array
    )


def _json(inputs: list[dict]) -> bytes:
    return json.dumps({"inputs": inputs}).encode()


BINARY_8 = _json([{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}])
BINARY_4 = _json([{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 4}}])


@pytest.mark.parametrize(
    ("body", "header", "match"),
    [
        (b"not json", None, "not valid JSON"),
        (b"[1, 2]", None, "JSON object"),
        (b'{"inputs": []}', None, "empty 'inputs'"),
        (
            _json([{"name": "x", "shape": [2], "datatype": "FP33", "data": [1, 2]}]),
            None,
            "unknown datatype 'FP33'",
        ),
        (
            _json([{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]),
            None,
            "2 elements but shape",
        ),
        (
            _json([{"name": "x", "shape": [2], "datatype": "FP32", "data": ["a", "b"]}]),
            None,
            "not a list of FP32",
        ),
        (_json([{"name": "x", "shape": [-1], "datatype": "FP32", "data": []}]), None, "non-negative"),
        (_json([{"name": "x", "shape": [1], "datatype": "FP32"}]), None, "neither 'data' nor"),
        (_json([{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}] * 2), None, "given twice"),
        (BINARY_8 + b"1234", str(len(BINARY_8)), "4 bytes short"),
        (BINARY_4 + b"1234", str(len(BINARY_4)), "needs 8"),
        (BINARY_8 + b"123456789abc", str(len(BINARY_8)), "4 bytes of binary data that no input claims"),
        (b'{"inputs": []}', "999", "body has 14 bytes"),
        (b'{"inputs": []}', "abc", "must be an integer"),
    ],
)
def test_malformed_requests_say_what_is_wrong(body: bytes, header: str | None, match: str) -> None:
    with pytest.raises(ProtocolError, match=match) as info:
        parse_infer_request(body, header)
    assert info.value.status == 400


def _arrays(**shapes: tuple[int, ...]) -> dict[str, np.ndarray]:
    return {k: np.zeros(v, np.float32) for k, v in shapes.items()}


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        (_arrays(states=(2, 4, 8)), "needs input 'latents'"),
        (
            {**_arrays(states=(2, 4, 8)), "latents": np.zeros((2, 3), np.int32)},
            "datatype INT32; .* takes FP32",
        ),
        (_arrays(states=(2, 4, 8), latents=(2, 3), extra=(1,)), "no input 'extra'"),
        ({**_arrays(latents=(2, 3)), "states": np.full((2, 4, 8), np.nan, np.float32)}, "NaN or infinity"),
        ({**_arrays(latents=(2, 3)), "states": np.full((2, 4, 8), -np.inf, np.float32)}, "NaN or infinity"),
    ],
)
def test_inputs_the_model_does_not_take_are_refused(inputs: dict[str, np.ndarray], match: str) -> None:
    with pytest.raises(ProtocolError, match=match) as info:
        check_tensors("world_model_step", STEP, inputs)
    assert info.value.status == 400


def test_unknown_requested_output() -> None:
    with pytest.raises(ProtocolError, match="no output 'nope'"):
        build_infer_response(
            "m", "1", InferRequest({}, outputs=[("nope", False)]), {"y": np.zeros(1, np.float32)}
        )


def test_metadata_shape_marks_dynamic_axes() -> None:
    assert ENCODER[0].to_json() == {"name": "video", "datatype": "FP32", "shape": [-1, -1, 3, 8, 8]}
    assert IDM_OUT[0].shape == [-1, -1, 3]
