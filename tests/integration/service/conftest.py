"""Fixtures of the service's integration tests: the app with its lifespan behind httpx, and the same
model loaded offline to check the served values against.

Async tests and fixtures run on anyio's pytest plugin (`pytestmark = pytest.mark.anyio`); the
backend is session-wide so module-scoped async fixtures (one app per module) work.

    async def test_x(app_client: httpx.AsyncClient) -> None:
        assert (await app_client.get("/readyz")).status_code == 200
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from exporters.runtime import LoadedModel, load_model
from service.app import create_app
from service.settings import Settings
from tests.service_fixtures import API_KEY, TINY_NAME, TINY_VERSION


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def service_settings(repo: Path, **overrides: Any) -> Settings:
    """The tiny repository on onnxruntime, with small limits so the bad-input tests stay small."""
    values: dict[str, Any] = {
        "repo": repo, "model": TINY_NAME, "version": TINY_VERSION, "runtime": "onnxruntime", "export_from": None,
        "max_queue_delay_ms": 5.0, "max_batch_size": 32, "plan_max_batch_size": 256, "max_frames": 64,
        "max_json_bytes": 1 << 20, "max_upload_bytes": 4 << 20, "api_keys": [API_KEY], "drain_timeout_s": 10.0,
        **overrides,
    }
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """`create_app(settings)` with its lifespan, warmed; yields (client with the API key, app)."""
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=60) as manager:
        await app.state.warmed
        assert app.state.engine.ready, app.state.engine.error
        transport = httpx.ASGITransport(app=manager.app)
        headers = {"Authorization": f"Bearer {API_KEY}"} if settings.api_keys else {}
        async with httpx.AsyncClient(transport=transport, base_url="http://lawm.test", headers=headers,
                                     timeout=120) as client:
            yield client, app


@pytest.fixture(scope="module")
async def served(tiny_model_repo: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """(client, app) for the tiny repository on onnxruntime; one app per test module."""
    async with running_app(service_settings(tiny_model_repo)) as pair:
        yield pair


@pytest.fixture(scope="module")
async def app_client(served: tuple[httpx.AsyncClient, Any]) -> httpx.AsyncClient:
    return served[0]


@pytest.fixture(scope="session")
def offline_model(tiny_model_repo: Path) -> LoadedModel:
    """The same repository version on the same runtime, loaded outside the service."""
    return load_model(tiny_model_repo, TINY_NAME, TINY_VERSION, "onnxruntime")
