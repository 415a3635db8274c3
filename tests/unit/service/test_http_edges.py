"""The service's outer layers on a small app with real HTTP semantics (no model): request ids, the JSON
error body, the last-resort 500, body limits, bearer keys, and the batcher's errors as statuses."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from service.auth import ApiKeyMiddleware, key_matches
from service.errors import ApiError, install_error_handlers
from service.inference.errors import DeadlineExceeded, QueueFull
from service.middleware import RequestContextMiddleware

KEY = "k" * 24


class Item(BaseModel):
    name: str
    count: int


def make_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/ok")
    async def ok() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/livez")
    async def livez() -> dict[str, bool]:
        return {"live": True}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    @app.get("/teapot")
    async def teapot() -> None:
        raise ApiError(418, "teapot", "short and stout", "tip me over")

    @app.get("/full")
    async def full() -> None:
        raise QueueFull("the queue is full", retry_after_s=2.2)

    @app.get("/late")
    async def late() -> None:
        raise DeadlineExceeded("too late")

    @app.post("/items")
    async def items(item: Item) -> dict[str, int]:
        return {"count": item.count}

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    app.add_middleware(ApiKeyMiddleware, keys=[KEY], exempt=["/livez"])
    app.add_middleware(RequestContextMiddleware, max_json_bytes=100, max_upload_bytes=1000)
    return app


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(make_app(), raise_server_exceptions=False, headers={"Authorization": f"Bearer {KEY}"})


def error_of(response, status: int, code: str) -> dict:  # noqa: ANN001
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


def test_request_id_is_echoed_or_made() -> None:
    client = TestClient(make_app(), headers={"Authorization": f"Bearer {KEY}"})
    assert client.get("/ok", headers={"X-Request-ID": "robot-7.step:42"}).headers["x-request-id"] == "robot-7.step:42"
    made = client.get("/ok", headers={"X-Request-ID": "has spaces and\ttabs"}).headers["x-request-id"]
    assert len(made) == 32 and int(made, 16) >= 0


def test_unexpected_errors_are_a_generic_500_logged_with_the_request_id(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="lawm.service"):
        response = client.get("/boom", headers={"X-Request-ID": "req-500"})
    error = error_of(response, 500, "internal_error")
    assert "secret" not in response.text and error["request_id"] == "req-500"
    assert any("req-500" in r.getMessage() and r.exc_info for r in caplog.records)
    assert client.get("/ok").status_code == 200  # and the app carries on


def test_api_errors_validation_and_unknown_paths_share_one_body(client: TestClient) -> None:
    assert error_of(client.get("/teapot"), 418, "teapot")["hint"] == "tip me over"
    error = error_of(client.post("/items", json={"name": "x", "count": "many"}), 422, "invalid_request")
    assert "count" in error["message"] and error["fields"][0]["field"] == "count"
    error_of(client.post("/items", content=b"{not json", headers={"content-type": "application/json"}), 422,
             "invalid_json")
    error_of(client.get("/nowhere"), 404, "not_found")
    error_of(client.delete("/ok"), 405, "method_not_allowed")


def test_batcher_errors_map_to_429_and_504(client: TestClient) -> None:
    full = client.get("/full")
    error_of(full, 429, "overloaded")
    assert full.headers["retry-after"] == "3"
    error_of(client.get("/late"), 504, "deadline_exceeded")


def test_body_limits_by_declared_length_and_while_streaming(client: TestClient) -> None:
    big_json = {"name": "x" * 200, "count": 1}
    error = error_of(client.post("/items", json=big_json), 413, "payload_too_large")
    assert "100 bytes" in error["message"]
    assert client.post("/upload", content=b"x" * 1000).json() == {"bytes": 1000}
    error_of(client.post("/upload", content=b"x" * 1001), 413, "payload_too_large")

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(5):
            yield b"y" * 300

    error_of(client.post("/upload", content=chunks()), 413, "payload_too_large")
    assert client.get("/ok").status_code == 200


def test_bearer_keys() -> None:
    anonymous = TestClient(make_app())
    error = error_of(anonymous.get("/ok"), 401, "unauthorized")
    assert "missing" in error["message"] and anonymous.get("/ok").headers["www-authenticate"] == "Bearer"
    assert "invalid" in error_of(anonymous.get("/ok", headers={"Authorization": "Bearer " + "x" * 24}), 401,
                                 "unauthorized")["message"]
    error_of(anonymous.get("/ok", headers={"Authorization": f"Basic {KEY}"}), 401, "unauthorized")
    assert anonymous.get("/ok", headers={"Authorization": f"bearer {KEY}"}).status_code == 200
    assert anonymous.get("/livez").status_code == 200  # exempt


def test_key_comparison() -> None:
    keys = [b"a" * 20, b"b" * 20]
    assert key_matches("b" * 20, keys) and not key_matches("b" * 19, keys) and not key_matches("", keys)
