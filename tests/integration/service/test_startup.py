"""Start-up: the app answers /livez while its model is still being exported (in a child process),
/readyz says what it waits for, then turns ready; a failed export leaves it live and unready with
the reason. The export is a stand-in (`fake_export`) the test releases through files."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager

from service.app import create_app
from service.settings import Settings
from tests.integration.service.conftest import service_settings
from tests.integration.service.fake_export import slow_export
from tests.service_fixtures import TINY_NAME, TINY_VERSION

pytestmark = pytest.mark.anyio


def stand_in_source(tiny_model_repo: Path, tmp_path: Path) -> Path:
    source = tmp_path / "source"
    source.mkdir()
    (source / "from").write_text(str(tiny_model_repo / TINY_NAME / str(TINY_VERSION)))
    return source


@contextlib.asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The app with its lifespan started (which does not wait for the model), and a client."""
    app = create_app(settings, export_target=slow_export)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lawm.test", timeout=60) as client:
            yield client, app


async def until(condition: Callable[[], bool]) -> None:
    """Wait for another process to get somewhere (pytest's timeout bounds a hang)."""
    while not condition():
        await anyio.sleep(0.02)


async def test_live_while_exporting_then_ready(tiny_model_repo: Path, tmp_path: Path) -> None:
    source = stand_in_source(tiny_model_repo, tmp_path)
    settings = service_settings(tmp_path / "repo", export_from=source, api_keys=[], warmup_max_batch=4)
    async with started(settings) as (client, app):
        engine = app.state.engine
        await until(lambda: engine.export is not None and engine.export.total is not None)
        assert (source / "started").exists() and not (source / "release").exists()  # the export is blocked
        assert (await client.get("/livez")).json() == {"live": True}
        waiting = await client.get("/readyz")
        assert waiting.status_code == 503 and waiting.headers["retry-after"] == "1"
        body = waiting.json()
        assert body["ready"] is False and body["state"] == "exporting", body
        assert body["waiting_for"].startswith("export (0/2 components, "), body
        assert (await client.get("/v1/models")).json()["error"]["code"] == "not_ready"

        (source / "release").touch()
        await app.state.warmed
        assert (await client.get("/readyz")).json() == {"ready": True, "state": "ready"}
        components = (await client.get("/v1/models")).json()["models"][0]["components"]
        assert components["encoder"]["warm_batch_sizes"] == [1, 2, 4]  # LAWM_WARMUP_MAX_BATCH, not 32
        assert components["world_model_step"]["warm_batch_sizes"] == [1, 2, 4]  # not the planner's 256
        metrics = (await client.get("/metrics")).text
        assert 'lawm_startup_seconds{phase="export"}' in metrics and "process_resident_memory_bytes" in metrics
    assert (tmp_path / "repo" / TINY_NAME / str(TINY_VERSION) / "manifest.json").is_file()


async def test_a_failed_export_is_reported_by_readyz(tiny_model_repo: Path, tmp_path: Path) -> None:
    source = stand_in_source(tiny_model_repo, tmp_path)
    (source / "fail").touch()
    (source / "release").touch()
    settings = service_settings(tmp_path / "repo", export_from=source, api_keys=[])
    async with started(settings) as (client, app):
        await app.state.warmed  # the start-up task ends (it does not raise: the server stays up)
        assert (await client.get("/livez")).status_code == 200
        failed = await client.get("/readyz")
        assert failed.status_code == 503
        body = failed.json()
        assert body["state"] == "failed" and "waiting_for" not in body, body
        assert body["error"].startswith("export failed: exporting ") and "a stand-in failure" in body["error"], body
    assert not (tmp_path / "repo" / TINY_NAME / str(TINY_VERSION)).exists()


async def test_warmup_all_warms_every_batch_the_batchers_form(tiny_model_repo: Path) -> None:
    settings = service_settings(tiny_model_repo, api_keys=[], warmup="all", plan_max_batch_size=64)
    async with started(settings) as (client, app):
        await app.state.warmed
        components = (await client.get("/v1/models")).json()["models"][0]["components"]
        assert components["encoder"]["warm_batch_sizes"] == [1, 2, 4, 8, 16, 32]
        assert components["controller"]["warm_batch_sizes"] == [1, 2, 4, 8, 16, 32, 64]
