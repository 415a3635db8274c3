"""Caches of computed arrays (goal encodings, latent actions), keyed by model version + content sha256.

An in-process LRU always sits in front; with `LAWM_REDIS_URL` set, entries are also written to Redis
(with a TTL) so every replica finds what any replica computed: a robot may post its goal image to one
replica and plan against its id on another. The cache never fails a request: when Redis is down it
is skipped for a while (a breaker, so requests do not each wait on a dead connection) and the local
LRU carries on.

    latents = ArrayCache("latents", capacity=4096, redis=client, prefix="lawm", ttl_s=3600)
    key = content_key(model_key, frames)        # sha256 of the model identity and the pixels
    if (z := await latents.get(key)) is None:
        z = ...; await latents.put(key, z)
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from service.settings import Settings

log = logging.getLogger("lawm.cache")

BREAKER_S = 5.0  # after a Redis failure, go local-only this long before trying again


def content_key(model_key: str, *arrays: np.ndarray) -> str:
    """sha256 of the model identity (name/version/runtime) and each array's shape, dtype and bytes."""
    digest = hashlib.sha256(model_key.encode())
    for array in arrays:
        digest.update(f"|{array.dtype.str}{array.shape}|".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _to_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _from_bytes(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


class ArrayCache:
    """key -> array: an LRU of `capacity` entries in this process, plus Redis (shared) when given.

    Used from the event loop only (the LRU needs no lock). `capacity=0` turns the cache off.
    """

    def __init__(
        self,
        namespace: str,
        capacity: int,
        redis: Any = None,
        prefix: str = "lawm",
        ttl_s: float = 3600.0,
        clock: Any = time.monotonic,
    ) -> None:
        if capacity < 0:
            raise ValueError(f"cache capacity must be >= 0, got {capacity} (LAWM_CACHE_SIZE)")
        self.namespace, self.capacity, self.redis, self.ttl_s = namespace, capacity, redis, ttl_s
        self._prefix = "{" + prefix + "}:cache:" + namespace + ":"
        self._local: OrderedDict[str, np.ndarray] = OrderedDict()
        self._clock = clock
        self._skip_until = 0.0  # the breaker: Redis is not tried before this time
        self.hits = {"local": 0, "redis": 0, "miss": 0}

    def __len__(self) -> int:
        return len(self._local)

    def __contains__(self, key: str) -> bool:
        return key in self._local

    @property
    def shared(self) -> bool:
        return self.redis is not None

    async def get(self, key: str) -> np.ndarray | None:
        if self.capacity == 0:
            return None
        found = self._local.get(key)
        if found is not None:
            self._local.move_to_end(key)
            self.hits["local"] += 1
            return found
        data = await self._remote("get", self._prefix + key)
        if data is None:
            self.hits["miss"] += 1
            return None
        array = _from_bytes(data)
        self._keep(key, array)
        self.hits["redis"] += 1
        return array

    async def put(self, key: str, array: np.ndarray) -> None:
        if self.capacity == 0:
            return
        self._keep(key, array)
        await self._remote("set", self._prefix + key, _to_bytes(array), px=int(self.ttl_s * 1000))

    async def delete(self, key: str) -> bool:
        """Forget `key` here and in Redis; True when either had it."""
        local = self._local.pop(key, None) is not None
        remote = await self._remote("delete", self._prefix + key)
        return local or bool(remote)

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()

    def _keep(self, key: str, array: np.ndarray) -> None:
        self._local[key] = array
        self._local.move_to_end(key)
        while len(self._local) > self.capacity:
            self._local.popitem(last=False)

    async def _remote(self, op: str, *args: Any, **kwargs: Any) -> Any:
        """One Redis call, or None when there is no Redis or it failed (the breaker then opens)."""
        if self.redis is None or self._clock() < self._skip_until:
            return None
        try:
            return await getattr(self.redis, op)(*args, **kwargs)
        except Exception as e:  # any Redis trouble degrades to the local cache; never fails a request
            if self._skip_until == 0.0 or self._clock() >= self._skip_until + 60:
                log.warning("the %s cache goes local-only for %gs: Redis failed (%s: %s)",
                            self.namespace, BREAKER_S, type(e).__name__, e)
            self._skip_until = self._clock() + BREAKER_S
            return None


def build_caches(settings: Settings) -> tuple[ArrayCache, ArrayCache]:
    """(goals, latent actions) for the app: local LRUs, shared through Redis when `redis_url` is set."""

    def client() -> Any:
        if not settings.redis_url:
            return None
        from service.jobs.redis_store import connect

        return connect(settings.redis_url, min(settings.redis_timeout_s, 1.0))

    goals = ArrayCache("goals", settings.max_goals, client(), settings.redis_prefix, settings.cache_ttl_s)
    latents = ArrayCache("latents", settings.cache_size, client(), settings.redis_prefix, settings.cache_ttl_s)
    return goals, latents
