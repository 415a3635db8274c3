"""`Allow` lists every method of a path (all its routes, not the first one matched), on 405 and on
OPTIONS (204); the app is routed without its lifespan (no model is needed to route)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(Settings()), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def document(client: TestClient) -> dict[str, Any]:
    return client.get("/openapi.json").json()


def allow(response: Any) -> list[str]:
    return [m.strip() for m in response.headers["allow"].split(",")]


@pytest.mark.parametrize(("path", "methods"), [
    ("/v1/jobs/abc", ["GET", "DELETE", "OPTIONS"]),  # two routes on one path
    ("/v1/sessions/abc", ["GET", "DELETE", "OPTIONS"]),
    ("/v1/plan", ["POST", "OPTIONS"]),
    ("/static/console.css", ["GET", "HEAD", "OPTIONS"]),  # the console's assets
])
def test_options_answers_the_methods_of_the_path(client: TestClient, path: str, methods: list[str]) -> None:
    response = client.options(path)
    assert response.status_code == 204 and response.content == b""
    assert allow(response) == methods


def test_a_method_the_path_does_not_take_is_405_with_the_full_allow(client: TestClient) -> None:
    response = client.put("/v1/jobs/abc")
    assert response.status_code == 405 and allow(response) == ["GET", "DELETE", "OPTIONS"]
    error = response.json()["error"]
    assert error["code"] == "method_not_allowed" and "GET, DELETE" in error["hint"]
    assert error["request_id"] == response.headers["x-request-id"]


def test_options_on_an_unknown_path_is_404(client: TestClient) -> None:
    response = client.options("/v1/nowhere")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_allow_matches_the_documented_methods_of_every_path(client: TestClient, document: dict[str, Any]) -> None:
    for path, operations in document["paths"].items():
        concrete = path.replace("{", "").replace("}", "")  # any value routes the same way
        documented = {m.upper() for m in operations}
        assert set(allow(client.options(concrete))) == documented | {"OPTIONS"}, path
