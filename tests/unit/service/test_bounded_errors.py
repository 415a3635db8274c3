"""Validation errors stay small whatever the request: at most 20 field errors, capped messages, one
error per bad array, and JSON the parser refuses answered as the same `invalid_json` error on every
route (a body model parsed by FastAPI, or a body read by `service.inputs.read_body`)."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from service.errors import MAX_FIELD_ERRORS, install_error_handlers
from service.inputs import read_body
from service.middleware import RequestContextMiddleware
from service.schemas import PlanRequest, RolloutRequest

SMALL = 16 * 1024  # bytes: what any error body must stay under


def make_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/rollouts")
    async def rollouts(request: Request) -> dict[str, int]:
        body = await read_body(request, RolloutRequest, upload_fields=("context",), max_part_bytes=1 << 20)
        assert isinstance(body.options, RolloutRequest)
        return {"steps": len(body.options.latents or [])}

    @app.post("/plan")
    async def plan(body: PlanRequest) -> dict[str, bool]:
        return {"ok": True}

    @app.post("/goals")  # a form of files only, as POST /v1/goals documents its multipart body
    async def goals(request: Request) -> dict[str, list[str]]:
        body = await read_body(request, PlanRequest, upload_fields=("image",), max_part_bytes=1 << 20,
                               options_field=False)
        return {"files": sorted(body.files)}

    return RequestContextMiddleware(app, max_json_bytes=16 << 20, max_upload_bytes=64 << 20)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(make_app())


def post(client: TestClient, path: str, text: str):  # noqa: ANN201
    return client.post(path, content=text.encode(), headers={"content-type": "application/json"})


def test_a_million_zeros_in_a_matrix_is_one_small_error(client: TestClient) -> None:
    text = json.dumps({"latents": [0] * 10**6})  # 3 MB: rows that are numbers, not lists
    r = post(client, "/rollouts", text)
    assert r.status_code == 422
    assert len(r.content) < SMALL
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert [f["field"] for f in error["fields"]] == ["latents"]
    assert "at most 4096" in error["fields"][0]["message"]
    r = post(client, "/rollouts", json.dumps({"latents": [0] * 1000}))
    assert r.status_code == 422 and len(r.json()["error"]["fields"]) == 1
    assert "row [0] is not a list" in r.json()["error"]["fields"][0]["message"]


@pytest.mark.parametrize(
    ("latents", "says"),
    [
        ([["x"] * 1000] * 1000, "more than 20 values are not finite numbers, the first at [0][0]"),
        ([[0.0] * 5000], "at most 4096"),
        ([[0.0]] * 5000, "at most 4096"),
    ],
)
def test_bad_matrices_are_refused_whole(client: TestClient, latents: list, says: str) -> None:
    r = post(client, "/rollouts", json.dumps({"latents": latents}))
    assert r.status_code == 422
    assert len(r.content) < SMALL
    fields = r.json()["error"]["fields"]
    assert len(fields) == 1 and fields[0]["field"] == "latents" and says in fields[0]["message"]


def test_a_few_bad_items_are_named_one_by_one(client: TestClient) -> None:
    r = post(client, "/rollouts", json.dumps({"latents": [[0.0, "x"], [1.0, None]]}))
    assert r.status_code == 422
    assert [f["field"] for f in r.json()["error"]["fields"]] == ["latents[0][1]", "latents[1][1]"]
    r = post(client, "/rollouts", json.dumps({"latents": [[0.0, 1.0], [2.0]]}))
    assert r.status_code == 422 and "rectangular" in r.json()["error"]["message"]


def test_a_good_matrix_still_passes(client: TestClient) -> None:
    r = post(client, "/rollouts", json.dumps({"latents": [[0.5, 1.0], [2.0, 3.0]]}))
    assert r.status_code == 200 and r.json() == {"steps": 2}


def test_many_bad_fields_are_capped_and_counted(client: TestClient) -> None:
    # many frames of the wrong type: one error each, but only MAX_FIELD_ERRORS come back
    r = post(client, "/rollouts", json.dumps({"latents": [[0.0]], "frames": [1] * 3000}))
    assert r.status_code == 422
    error = r.json()["error"]
    assert len(error["fields"]) == MAX_FIELD_ERRORS
    assert error["field_errors"] == 3000
    assert "(and 2995 more)" in error["message"]
    assert len(r.content) < SMALL


def test_too_many_keys_and_long_vectors_are_one_error(client: TestClient) -> None:
    r = post(client, "/rollouts", json.dumps({f"k{i}": i for i in range(100_000)}))
    assert r.status_code == 422 and len(r.content) < SMALL
    assert len(r.json()["error"]["fields"]) == 1
    r = post(client, "/plan", json.dumps({"observation": "x", "goal": "y", "action_low": ["a"] * 200_000}))
    assert r.status_code == 422 and len(r.content) < SMALL
    assert len(r.json()["error"]["fields"]) <= MAX_FIELD_ERRORS


@pytest.mark.parametrize("path", ["/rollouts", "/plan"])
@pytest.mark.parametrize("text", ["[" * 5000 + "]" * 5000, '{"latents": ' + "[" * 3000 + "]" * 3000 + "}", "{not json"])
def test_json_the_parser_refuses_is_the_same_error_everywhere(client: TestClient, path: str, text: str) -> None:
    r = post(client, path, text)
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert error["code"] == "invalid_json"
    assert error["hint"] and error["request_id"]
    assert len(r.content) < SMALL


def test_a_refused_multipart_body_is_the_json_error_with_a_hint(client: TestClient) -> None:
    fields = {f"f{i}": "x" for i in range(50)}  # more fields than the parser takes
    r = client.post("/rollouts", data=fields, files={"context": ("a.mp4", b"x")})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "bad_multipart" and error["hint"] and "context" in error["hint"]


def test_a_multipart_field_the_route_does_not_document_is_refused_with_a_hint(client: TestClient) -> None:
    assert client.post("/goals", files={"image": ("g.png", b"x")}).json() == {"files": ["image"]}
    for path, data, files in [
        ("/goals", {"request": "{}"}, {"image": ("g.png", b"x")}),  # a files-only form takes no options
        ("/rollouts", {"options": "{}"}, {"context": ("a.mp4", b"x")}),
        ("/rollouts", None, {"clip": ("a.mp4", b"x")}),
    ]:
        r = client.post(path, data=data, files=files)
        assert r.status_code == 422, (path, r.text)
        error = r.json()["error"]
        assert error["code"] == "unexpected_field" and error["hint"], path
