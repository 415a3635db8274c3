"""`service.inference.cache.ArrayCache` shared through a real redis-server: what one replica computed another
finds; entries expire; a dead Redis degrades to the local LRU without failing or slowing callers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.bench.processes import free_port
from service.inference.cache import ArrayCache, content_key
from service.jobs.redis_store import connect

pytestmark = pytest.mark.anyio


async def test_replicas_share_entries(redis_server: Any, prefix: str) -> None:
    a = ArrayCache("latents", 8, connect(redis_server.url), prefix, ttl_s=30)
    b = ArrayCache("latents", 8, connect(redis_server.url), prefix, ttl_s=30)
    try:
        z = np.random.default_rng(0).standard_normal((7, 16)).astype(np.float32)
        key = content_key("tiny/1/onnxruntime", np.zeros((16, 32, 32, 3), np.uint8))
        assert await b.get(key) is None
        await a.put(key, z)
        found = await b.get(key)
        assert found is not None and found.dtype == np.float32 and np.array_equal(found, z)
        assert b.hits == {"local": 0, "redis": 1, "miss": 1}
        assert (await b.get(key)) is not None and b.hits["local"] == 1  # kept locally after the first fetch
        ttl = await a.redis.pttl(a._prefix + key)
        assert 0 < ttl <= 30_000
        assert await b.delete(key) and await a.redis.exists(a._prefix + key) == 0
    finally:
        await a.close()
        await b.close()


async def test_redis_down_degrades_to_local(prefix: str) -> None:
    ticks = [0.0]
    cache = ArrayCache("goals", 4, connect(f"redis://127.0.0.1:{free_port()}/0", 0.5), prefix,
                       clock=lambda: ticks[0])
    try:
        await cache.put("g", np.ones((2, 3)))  # the Redis write fails quietly
        assert np.array_equal(await cache.get("g"), np.ones((2, 3)))  # the local copy answers
        assert await cache.get("other") is None
        assert cache._skip_until == pytest.approx(5.0)  # the breaker is open: no call waits on Redis now
    finally:
        await cache.close()
