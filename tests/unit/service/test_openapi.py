"""The OpenAPI document generated clients are built from: every `$ref` resolves (the bodies of routes
that read their body themselves included), and the v1 and jobs operations document the JSON error
body for their 4xx and 5xx answers."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from service.app import create_app
from service.settings import Settings


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return create_app(Settings()).openapi()


def resolve(schema: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = schema
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve ({part!r} missing)"
        node = node[part]
    return node


def test_every_ref_resolves(schema: dict[str, Any]) -> None:
    refs = set(re.findall(r'"\$ref": "([^"]+)"', json.dumps(schema)))
    assert "#/components/schemas/GoalRequest" in refs and "#/components/schemas/TransferRequest" in refs
    for ref in refs:
        resolve(schema, ref)


def test_errors_are_documented_with_the_error_body(schema: dict[str, Any]) -> None:
    error = resolve(schema, "#/components/schemas/ErrorBody")
    assert "error" in error["properties"]
    for path in ("/v1/latent-actions", "/v1/rollouts", "/v1/goals", "/v1/plan", "/v1/transfers"):
        responses = schema["paths"][path]["post"]["responses"]
        for status in ("4XX", "5XX"):
            assert responses[status]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"
            }
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                assert "HTTPValidationError" not in json.dumps(response), (path, status)


def test_multipart_bodies_admit_only_the_fields_the_routes_read(schema: dict[str, Any]) -> None:
    for path, fields in {"/v1/transfers": {"clip_a", "clip_b", "request"}, "/v1/rollouts": {"context", "request"}}.items():
        form = schema["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert set(form["properties"]) == fields and form["additionalProperties"] is False
