"""The in-process side of `service.inference.cache`: content keys and the LRU (Redis sharing: tests/integration/redis)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.inference.cache import ArrayCache, content_key


def test_content_key_names_model_and_content() -> None:
    frames = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    key = content_key("demo/1/onnxruntime", frames)
    assert key == content_key("demo/1/onnxruntime", frames.copy())  # same pixels, same key
    assert key != content_key("demo/2/onnxruntime", frames)  # another model version
    assert key != content_key("demo/1/onnxruntime", frames.reshape(4, 2, 4, 3))  # same bytes, other shape
    changed = frames.copy()
    changed[1, 3, 3, 2] ^= 1
    assert key != content_key("demo/1/onnxruntime", changed)


def test_lru_keeps_the_most_recently_used() -> None:
    async def go() -> None:
        cache = ArrayCache("t", capacity=2)
        await cache.put("a", np.zeros(1))
        await cache.put("b", np.ones(1))
        assert (await cache.get("a")) is not None  # a is now the most recent
        await cache.put("c", np.full(1, 2.0))
        assert "b" not in cache and "a" in cache and len(cache) == 2
        assert await cache.get("b") is None
        assert cache.hits == {"local": 1, "redis": 0, "miss": 1}
        assert await cache.delete("a") and not await cache.delete("a")

    asyncio.run(go())


def test_capacity_zero_turns_it_off() -> None:
    async def go() -> None:
        cache = ArrayCache("t", capacity=0)
        await cache.put("a", np.zeros(1))
        assert await cache.get("a") is None and len(cache) == 0

    asyncio.run(go())
    with pytest.raises(ValueError, match="LAWM_CACHE_SIZE"):
        ArrayCache("t", capacity=-1)
