"""A real `redis-server` of the tests' own (free port, tmp folder, stopped after), never the machine's.

Where no redis-server can be found these tests skip, saying so; with `LAWM_REQUIRE_REDIS=1` (set by
`.ci/run`) they fail instead, so CI cannot pass without them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from service.bench.redis_server import RedisServer, find_redis_server

REQUIRE = os.environ.get("LAWM_REQUIRE_REDIS") == "1"
MISSING = (
    "REDIS TESTS NOT RUN: no redis-server found (apt-get install redis-server, which `make test` does as root, "
    "or set LAWM_REDIS_SERVER=/path/to/redis-server)"
)


def need_redis_server() -> str:
    binary = find_redis_server()
    if binary is None:
        if REQUIRE:
            pytest.fail(MISSING + "; LAWM_REQUIRE_REDIS=1 makes this a failure", pytrace=False)
        pytest.skip(MISSING)
    return binary


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session's store and worker tests (each test uses its own key prefix)."""
    binary = need_redis_server()
    with RedisServer.start_new(tmp_path_factory.mktemp("redis"), binary=binary) as server:
        yield server


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so tests sharing the server never see each other's jobs."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[object]:
    from service.jobs.redis_store import connect

    client = connect(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


def store_for(url: str, prefix: str, **kwargs: object) -> object:
    """A `RedisJobStore` with its own client (as a separate replica or worker would have)."""
    from service.jobs.redis_store import RedisJobStore, connect

    blocking = bool(kwargs.pop("blocking_reads", False))
    retries = kwargs.pop("retries", None)
    client = connect(url, blocking_reads=blocking, retries=retries)  # type: ignore[arg-type]
    return RedisJobStore(client, prefix=prefix, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def aof_dir(tmp_path: Path) -> Path:
    return tmp_path / "redis-aof"
