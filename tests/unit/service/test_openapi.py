"""The OpenAPI document generated clients are built from: every `$ref` resolves (the bodies of routes
that read their body themselves included), and every operation lists the exact error statuses it can
answer, each with its body (the service's ErrorBody; the protocol's own on /v2 and /readyz). That the
server keeps to the document is tested by schemathesis (tests/integration/service/test_openapi_conformance.py)."""

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


def error_statuses(operation: dict[str, Any]) -> set[int]:
    return {int(s) for s in operation["responses"] if s[0] in "45"}


def body_of(response: dict[str, Any]) -> Any:
    return response["content"]["application/json"]["schema"]


def test_every_operation_lists_its_exact_error_statuses_with_the_error_body(schema: dict[str, Any]) -> None:
    error = resolve(schema, "#/components/schemas/ErrorBody")
    assert "error" in error["properties"] and "HTTPValidationError" not in json.dumps(schema)
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert not {"4XX", "5XX", "default"} & set(responses), (method, path)  # exact statuses only
            assert {413, 500} <= error_statuses(operation), (method, path)  # body limit, last resort
            if path.startswith("/v2") or path == "/readyz":
                continue  # their own bodies: below
            for status in error_statuses(operation):
                assert body_of(responses[str(status)]) == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)


def test_statuses_follow_from_what_an_operation_takes(schema: dict[str, Any]) -> None:
    paths = schema["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            statuses = error_statuses(operation)
            if "{" in path:  # an id that may be unknown
                assert 404 in statuses, (method, path)
            if "requestBody" in operation:  # read: too slow, a type not taken, invalid
                assert {408, 415, 422} <= statuses, (method, path)
    # uploads: an empty one, a multipart body Starlette refuses; a JSON-only body has no 400
    assert 400 in error_statuses(paths["/v1/latent-actions"]["post"])
    assert 400 not in error_statuses(paths["/v1/plan"]["post"])
    # the engine's 503 (not ready) where a route needs the model, not where it does not
    assert 503 in error_statuses(paths["/v1/models"]["get"])
    assert 503 not in error_statuses(paths["/v1/goals/{goal_id}"]["delete"])
    # a plain string path id cannot fail validation: no 422; a typed one can
    assert 422 not in error_statuses(paths["/v1/jobs/{job_id}"]["get"])
    assert 422 in error_statuses(paths["/console/episodes/{env}/{seed}"]["get"])
    # each route's own: work in the batchers, deadlines, conflicts
    assert {409, 429, 504} <= error_statuses(paths["/v1/sessions/{session_id}/step"]["post"])
    assert {406, 409} <= error_statuses(paths["/v1/jobs/{job_id}/result"]["get"])
    retry = paths["/v1/plan"]["post"]["responses"]["429"]["headers"]
    assert retry["Retry-After"]["schema"] == {"type": "integer"}


def test_probes_and_kserve_document_their_own_bodies(schema: dict[str, Any]) -> None:
    ready = schema["paths"]["/readyz"]["get"]["responses"]
    assert body_of(ready["503"])["$ref"] == body_of(ready["200"])["$ref"] == "#/components/schemas/Readiness"
    infer = schema["paths"]["/v2/models/{name}/infer"]["post"]["responses"]
    assert body_of(infer["400"]) == {"$ref": "#/components/schemas/KServeError"}
    # the protocol's 500 and the service's last-resort 500 both reach a client
    assert {r["$ref"].rsplit("/", 1)[-1] for r in body_of(infer["500"])["anyOf"]} == {"KServeError", "ErrorBody"}
    assert body_of(infer["408"]) == {"$ref": "#/components/schemas/ErrorBody"}  # the body time-out


def test_api_keys_add_401_and_bearer_security_except_on_exempt_paths(schema: dict[str, Any]) -> None:
    assert "securitySchemes" not in schema["components"]
    assert all(401 not in error_statuses(op) for ops in schema["paths"].values() for op in ops.values())
    keyed = create_app(Settings(api_keys=["k" * 20])).openapi()
    assert keyed["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "one of the server's LAWM_API_KEYS"}
    models = keyed["paths"]["/v1/models"]["get"]
    assert models["security"] == [{"bearer": []}] and 401 in error_statuses(models)
    assert "WWW-Authenticate" in models["responses"]["401"]["headers"]
    livez = keyed["paths"]["/livez"]["get"]  # exempt (LAWM_AUTH_EXEMPT)
    assert "security" not in livez and 401 not in error_statuses(livez)


def test_multipart_bodies_admit_only_the_fields_the_routes_read(schema: dict[str, Any]) -> None:
    for path, fields in {
        "/v1/transfers": {"clip_a", "clip_b", "request"}, "/v1/rollouts": {"context", "request"},
        "/v1/latent-actions": {"file"}, "/v1/goals": {"image"},  # files only: any other field is a 422
        "/v1/sessions/{session_id}/step": {"frame", "request"},
    }.items():
        form = schema["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert set(form["properties"]) == fields and form["additionalProperties"] is False
