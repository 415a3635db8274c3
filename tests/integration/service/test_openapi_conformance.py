"""The served OpenAPI document against the server itself, by schemathesis: requests generated from the
document (valid and invalid ones) sent in-process to the app serving the tiny model, and every answer
checked against what the document says (status documented, content type documented, body matching
its schema, no 5xx, OPTIONS and unlisted methods answered with a correct `Allow`).

Small and fixed, about 1100 requests in under half a minute on 2 cores: a fixed seed, deterministic
generation, EXAMPLES generated requests per operation plus the coverage phase's fixed cases (a missing
or wrong-typed field, a boundary value, an unlisted method, OPTIONS, a Content-Type not taken), no
example database (a run does not depend on an earlier one) and no Hypothesis deadline (schemathesis
turns it off). Every operation is included: none has a side effect that outlives its request, and a
generated transfer job never gets past the clip checks (no valid clip is generated)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from asgi_lifespan import LifespanManager
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from service.app import create_app
from service.inputs import NPY
from tests.integration.service.conftest import service_settings
from tests.service_fixtures import API_KEY

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {API_KEY}"}
EXAMPLES = 8  # per operation, in the fuzzing phase (the coverage phase adds its own fixed cases)
SEED = 20260601
CHECKS = [
    not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
    response_headers_conformance, unsupported_method, allow_header_conformance,
]


class KeptAlive:
    """The app with its lifespan run once, on the event loop schemathesis sends requests on.

    Schemathesis starts an ASGI app's lifespan on its first request and ends it after every test
    (each operation is a test): the model would be loaded and warmed again for each. This wrapper
    answers schemathesis's lifespan messages itself and runs the app's own lifespan once, until
    `close()`."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None
        self.started: asyncio.Task[None] | None = None
        self.closed = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._start()
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _start(self) -> None:
        if self.started is None:
            self.loop, self.stop = asyncio.get_running_loop(), asyncio.Event()
            up = asyncio.Event()
            self.started = asyncio.create_task(self._run(up))
            await up.wait()
        if self.started.done():
            self.started.result()  # a failed start fails every request's test with its error

    async def _run(self, up: asyncio.Event) -> None:
        try:
            async with LifespanManager(self.app, startup_timeout=120, shutdown_timeout=60):
                await self.app.state.warmed
                assert self.app.state.engine.ready, self.app.state.engine.error
                up.set()
                assert self.stop is not None
                await self.stop.wait()
        finally:
            up.set()
            self.closed.set()

    def close(self) -> None:
        if self.loop is not None and self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)
            self.closed.wait(120)


def with_deadline(document: dict[str, Any]) -> list[str]:
    """Operations ("POST /v1/rollouts") that take a client's `deadline_ms`, as a parameter or a body field."""
    schemas = document["components"]["schemas"]
    names = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            fields = {p["name"] for p in operation.get("parameters", [])}
            for media in operation.get("requestBody", {}).get("content", {}).values():
                ref = media.get("schema", {}).get("$ref", "")
                fields |= set(schemas.get(ref.rsplit("/", 1)[-1], {}).get("properties", {}))
            if "deadline_ms" in fields:
                names.append(f"{method.upper()} {path}")
    return names


# The document is the app's own, built here (creating the app loads nothing: the model is loaded by its
# lifespan) so that pytest can collect one test per operation; `served` checks that the running app
# serves the same document.
DOCUMENT = create_app(service_settings(Path("unused"))).openapi()
CONFIG = schemathesis.Config.from_dict({
    "seed": SEED,
    "generation": {"deterministic": True, "max-examples": EXAMPLES, "database": "none"},
    # 504 is the documented answer to a deadline the client chose, not a server failure: generated
    # deadlines of a few microseconds pass before any work is done.
    "operations": [{"include-name": name, "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "504"]}}}
                   for name in with_deadline(DOCUMENT)],
})
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)
# Uploads are bytes on the wire whatever their type (schemathesis knows only a few binary types).
schemathesis.serializer.alias(["video/mp4", "video/quicktime", "video/webm", "video/x-msvideo", NPY],
                              "application/octet-stream")


@pytest.fixture(scope="module")
def served(tiny_model_repo: Path) -> Iterator[KeptAlive]:
    app = KeptAlive(create_app(service_settings(tiny_model_repo)))
    try:
        # schemathesis's own ASGI client: the app starts on the event loop later requests run on
        with asgi.get_client(app) as client:
            document = client.get("/openapi.json", headers=AUTH)
        assert document.status_code == 200 and document.json() == DOCUMENT
        yield app
    finally:
        app.close()


@schema.parametrize()
def test_the_server_answers_as_its_openapi_document_says(case: schemathesis.Case, served: KeptAlive) -> None:
    response = case.call_and_validate(app=served, headers=AUTH, checks=CHECKS)  # raises on a failed check
    if case.method.upper() != case.operation.method.upper():  # schemathesis's unsupported-method probe
        expected = 204 if case.method.upper() == "OPTIONS" else 405  # OPTIONS lists the methods, others are refused
        assert response.status_code == expected and "allow" in {k.lower() for k in response.headers}
        return
    documented = DOCUMENT["paths"][case.operation.path][case.operation.method.lower()]["responses"]
    assert str(response.status_code) in documented, (response.status_code, sorted(documented))
