"""KServe Open Inference Protocol v2 through Triton's own client (`tritonclient.http`) against a real
uvicorn server in this process, on the tiny exported model (onnxruntime): metadata, readiness, JSON
and binary inference whose values equal calling the component directly, and bad requests answered
400/404 `{"error"}`.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException


@pytest.fixture(scope="module")
def live_server(tiny_model_repo: Path):  # noqa: ANN201
    """A real uvicorn server (in a thread of this process) serving the tiny repository on
    onnxruntime, without API keys (tritonclient sends none): (url, app)."""
    from tests.integration.service.conftest import service_settings
    from tests.integration.service.jobs_support import serve_in_thread

    with serve_in_thread(service_settings(tiny_model_repo, api_keys=[], port=0)) as served:
        yield served


@pytest.fixture(scope="module")
def v2(live_server):  # noqa: ANN001, ANN201
    """(tritonclient, base url, the served LoadedModel)."""
    url, app = live_server
    client = triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=60.0)
    yield client, url, app.state.engine.model
    client.close()


def _inputs(model, name: str, rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:  # noqa: ANN001
    """Inputs of the right shapes for `name` (time axis 2 steps for context components)."""
    import torch

    from exporters.components import random_inputs

    component = model.components[name]
    gen = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    return {k: v.numpy() for k, v in random_inputs(component.inputs, batch, 2, model.config, gen).items()}


def test_server_and_model_metadata_list_every_component(v2) -> None:  # noqa: ANN001
    client, _, model = v2
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "lawm" and "binary_tensor_data" in meta["extensions"]
    for name, component in model.components.items():
        assert client.is_model_ready(name)
        assert client.is_model_ready(name, model_version=str(model.version))
        md = client.get_model_metadata(name)
        assert md["name"] == name and md["versions"] == [str(model.version)]
        assert [i["name"] for i in md["inputs"]] == [s.name for s in component.inputs]
        for spec_json, spec in zip(
            md["inputs"] + md["outputs"], component.inputs + component.outputs, strict=True
        ):
            assert spec_json["datatype"] == "FP32"
            assert spec_json["shape"] == [-1 if isinstance(a, str) else a for a in spec.shape]
    step = client.get_model_metadata("world_model_step", model_version=str(model.version))
    n, d = model.config.encoder.tokens, model.config.encoder.dim
    assert step["inputs"][0]["shape"] == [-1, n, d] and step["outputs"][0]["name"] == "next_states"


@pytest.mark.parametrize("name", ["world_model_step", "encoder"])
@pytest.mark.parametrize("binary", [False, True])
def test_infer_equals_the_component_called_directly(v2, name: str, binary: bool) -> None:  # noqa: ANN001
    client, _, model = v2
    arrays = _inputs(model, name, np.random.default_rng(0), batch=3)
    inputs = []
    for key, array in arrays.items():
        tensor = triton.InferInput(key, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    output = model.components[name].outputs[0].name
    outputs = [triton.InferRequestedOutput(output, binary_data=binary)]
    result = client.infer(name, inputs, outputs=outputs, request_id="r-1")
    expected = model.components[name].run(arrays)[output]
    got = result.as_numpy(output)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert result.get_response()["id"] == "r-1"
    # no outputs named: tritonclient asks for all of them in binary
    again = client.infer(name, inputs, model_version=str(model.version))
    np.testing.assert_allclose(again.as_numpy(output), expected, rtol=1e-5, atol=1e-6)


def _post(url: str, path: str, body: dict | bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        url + path,
        content=content,
        headers={"Content-Type": "application/json", **(headers or {})},
        timeout=30,
    )


def _tensor(name: str, array: np.ndarray, datatype: str = "FP32") -> dict:
    return {
        "name": name,
        "shape": list(array.shape),
        "datatype": datatype,
        "data": array.reshape(-1).tolist(),
    }


def test_bad_requests_are_400_or_404_with_an_error_string(v2) -> None:  # noqa: ANN001
    client, url, model = v2
    n, d, z = model.config.encoder.tokens, model.config.encoder.dim, model.config.idm.latent_dim
    states, latents = np.zeros((2, n, d), np.float32), np.zeros((2, z), np.float32)
    infer = "/v2/models/world_model_step/infer"
    cases = [
        (
            infer,
            {"inputs": [_tensor("states", np.zeros((2, n, d + 1), np.float32)), _tensor("latents", latents)]},
            400,
            "states",
        ),  # wrong shape
        (
            infer,
            {"inputs": [_tensor("states", states), _tensor("latents", np.zeros((3, z), np.float32))]},
            400,
            "batch",
        ),  # batch disagrees
        (
            infer,
            {"inputs": [_tensor("states", states), _tensor("latents", latents.astype(np.int32), "INT32")]},
            400,
            "INT32",
        ),  # wrong datatype
        (infer, {"inputs": [_tensor("states", states)]}, 400, "latents"),  # missing input
        (infer, b"{not json", 400, "not valid JSON"),
        ("/v2/models/no_such_model/infer", {"inputs": [_tensor("states", states)]}, 404, "unknown model"),
        (
            "/v2/models/world_model_step/versions/99/infer",
            {"inputs": [_tensor("states", states)]},
            404,
            "version",
        ),
    ]
    for path, body, status, needle in cases:
        response = _post(url, path, body)
        assert response.status_code == status, (path, response.text)
        error = response.json()["error"]
        assert isinstance(error, str) and needle in error, error
    for path in (
        "/v2/models/no_such_model",
        "/v2/models/no_such_model/ready",
        "/v2/models/encoder/versions/99",
    ):
        response = httpx.get(url + path, timeout=30)
        assert response.status_code == 404 and isinstance(response.json()["error"], str)
    # binary data that does not add up
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "states",
                    "shape": [2, n, d],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    ).encode()
    response = _post(url, infer, head + b"12345678", {"Inference-Header-Content-Length": str(len(head))})
    assert response.status_code == 400 and "binary_data_size" in response.json()["error"]
    # through Triton's client the error surfaces as its exception, with our message
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("no_such_model")
    bad = triton.InferInput("states", [2, n, d], "FP32")
    bad.set_data_from_numpy(np.full((2, n, d), np.nan, np.float32))
    ok = triton.InferInput("latents", [2, z], "FP32")
    ok.set_data_from_numpy(latents)
    with pytest.raises(InferenceServerException, match="NaN"):
        client.infer("world_model_step", [bad, ok])
    assert client.is_server_ready()  # still healthy after all of that
