"""Jobs on Redis, shared by every API replica and `lawm worker` (switched on by `LAWM_REDIS_URL`).

The same `JobStore` transitions as the in-process store, each one a Lua script (`redis_lua.py`) so
it is atomic across processes, plus the queue that carries job ids from the API to the workers:

    {p}:job:{id}        hash    the job (state, progress, stage, timings, attempts, owner, ...)
    {p}:job:{id}:in     hash    inputs (deleted when the job ends)
    {p}:job:{id}:out    hash    result: "metrics" JSON, "a:<name>" bytes or "f:<name>" a file on result_dir
    {p}:idem:{key}      string  Idempotency-Key -> job id
    {p}:state:{state}   zset    job ids by state (score: created_at while live, expires_at once ended)
    {p}:jobs            stream  one entry per job to run; consumer group "workers"
    {p}:dead            stream  jobs given up after `max_attempts` starts (the dead-letter stream)
    {p}:workers         zset    worker name -> last heartbeat

`{p}` is `{prefix}` with braces: a Redis Cluster hash tag, so every key lands in one slot and the
scripts may touch keys they compute. Delivery is at-least-once (a worker that dies leaves its stream
entry pending; a live one takes it over with XAUTOCLAIM after the visibility timeout), so every
write is idempotent: a job is created once per id (HSETNX) and per Idempotency-Key; `finish`
writes the first result only; a reclaimed job is requeued, or failed and dead-lettered once it has
been started `max_attempts` times. Ended jobs, their results and keys expire after `ttl_s`.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.jobs.redis_lua import COMMON, SCRIPTS
from service.jobs.store import IdempotencyConflict, Job, JobResult, JobSpec, JobState, StoreUnavailable

if TYPE_CHECKING:
    from service.settings import Settings

log = logging.getLogger("lawm.jobs")

GROUP = "workers"
FILE_PURGE_EVERY_S = 60.0  # how often expired renders are looked for on the shared volume
T = TypeVar("T")


class ResultTooLarge(Exception):
    """A render above `redis_result_max_bytes` with no `result_dir` to put it on."""


# ----------------------------------------------------------------------------- decoding
def _text(value: bytes | None) -> str | None:
    return None if value is None or value == b"" else value.decode()


def _float(value: bytes | None) -> float | None:
    text = _text(value)
    return None if text is None else float(text)


def job_from_hash(flat: list[bytes] | dict[bytes, bytes] | None) -> Job | None:
    """A job from HGETALL's reply (a flat list from a script, a dict from redis-py)."""
    if not flat:
        return None
    h = flat if isinstance(flat, dict) else dict(zip(flat[::2], flat[1::2], strict=True))
    error = _text(h.get(b"error"))
    return Job(
        id=h[b"id"].decode(),
        kind=h[b"kind"].decode(),
        params=json.loads(h[b"params"]),
        fingerprint=h[b"fingerprint"].decode(),
        idempotency_key=_text(h.get(b"ikey")),
        created_at=float(h[b"created_at"]),
        state=JobState(h[b"state"].decode()),
        progress=float(h.get(b"progress") or 0.0),
        stage=_text(h.get(b"stage")),
        timings={k: float(v) for k, v in json.loads(h.get(b"timings") or b"{}").items()},
        started_at=_float(h.get(b"started_at")),
        finished_at=_float(h.get(b"finished_at")),
        cancel_requested=h.get(b"cancel_requested") == b"1",
        error=json.loads(error) if error else None,
        expires_at=_float(h.get(b"expires_at")),
    )


def _artifact_file(name: str) -> str:
    """A file name for an artifact name such as "video/mp4"."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "artifact"


@dataclass(frozen=True)
class Entry:
    """One stream entry: a job to run."""

    entry_id: str
    job_id: str


# ----------------------------------------------------------------------------- the store
class RedisJobStore:
    """`JobStore` on Redis, plus the job stream the workers consume (see the module docstring).

    `consumer` names this process in the consumer group (workers only). Every Redis failure is raised
    as `StoreUnavailable` (a 503 in the job routes; a worker backs off and retries).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str = "lawm",
        ttl_s: float = 3600.0,
        max_attempts: int = 3,
        result_max_bytes: int = 16 << 20,
        result_dir: Path | None = None,
        consumer: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"job_ttl_s must be > 0 seconds, got {ttl_s}; set LAWM_JOB_TTL_S to e.g. 3600")
        if max_attempts < 1:
            raise ValueError(f"job_max_attempts must be >= 1, got {max_attempts}")
        self.redis = client
        self.prefix = "{" + prefix + "}"
        self.ttl_s, self.max_attempts = ttl_s, max_attempts
        self.result_max_bytes, self.result_dir = result_max_bytes, result_dir
        self.consumer = consumer or f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._clock = clock
        self._owned: dict[str, str] = {}  # job id -> owner token of the claim this process made
        self._next_file_purge = 0.0
        # The outcome of the last command, whichever caller sent it: `/readyz` reports Redis as the
        # requests find it, not only as the last periodic refresh did.
        self.last_outcome: tuple[float, str | None] | None = None  # (monotonic time, error or None)
        self._scripts = {name: client.register_script(COMMON + body) for name, body in SCRIPTS.items()}

    @classmethod
    def from_settings(
        cls, settings: Settings, consumer: str | None = None, blocking_reads: bool = False
    ) -> RedisJobStore:
        """The store `settings.redis_url` names. `blocking_reads` (workers): a socket timeout long enough
        for XREADGROUP's BLOCK."""
        return cls(
            connect(settings.redis_url, settings.redis_timeout_s, blocking_reads),
            prefix=settings.redis_prefix,
            ttl_s=settings.job_ttl_s,
            max_attempts=settings.job_max_attempts,
            result_max_bytes=settings.redis_result_max_bytes,
            result_dir=settings.result_dir,
            consumer=consumer,
        )

    # -- plumbing
    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def stream(self) -> str:
        return self.key("jobs")

    @property
    def dead_stream(self) -> str:
        return self.key("dead")

    async def _call(self, op: Callable[[], Awaitable[T]]) -> T:
        try:
            result = await op()
        except (RedisConnectionError, RedisTimeoutError, OSError) as e:
            error = StoreUnavailable(e)
            self.last_outcome = (time.monotonic(), error.message)
            raise error from e
        self.last_outcome = (time.monotonic(), None)
        return result

    async def _script(self, name: str, job_id: str, *args: Any) -> Any:
        script = self._scripts[name]
        return await self._call(lambda: script(keys=[self.key("job", job_id)], args=[self.prefix, *args]))

    def _now(self) -> str:
        return repr(self._clock())

    async def ping(self) -> bool:
        await self._call(self.redis.ping)
        return True

    async def close(self) -> None:
        await self.redis.aclose()

    # -- JobStore protocol
    async def create(self, spec: JobSpec, idempotency_key: str | None = None) -> tuple[Job, bool]:
        inputs: list[Any] = []
        for name, data in spec.inputs.items():
            inputs += [name, data]
        params = json.dumps(spec.params)
        for _ in range(3):  # a uuid4 collision is astronomically rare; HSETNX makes it harmless anyway
            job_id = uuid.uuid4().hex
            reply = await self._script(
                "create", job_id, job_id, idempotency_key or "", spec.fingerprint, self._now(), spec.kind, params,
                len(spec.inputs), *inputs,
            )
            outcome = reply[0].decode()
            if outcome == "existing":
                known, fingerprint = reply[1].decode(), reply[2].decode()
                if fingerprint != spec.fingerprint:
                    raise IdempotencyConflict(idempotency_key or "", known)
                job = await self.get(known)
                if job is not None:
                    return job, False
                continue  # expired between the two reads: make a new one
            if outcome == "created":
                job = await self.get(job_id)
                assert job is not None
                return job, True
        raise RuntimeError("could not create a job with a unique id")

    async def get(self, job_id: str) -> Job | None:
        return job_from_hash(await self._call(lambda: self.redis.hgetall(self.key("job", job_id))))

    async def inputs(self, job_id: str) -> dict[str, bytes] | None:
        found = await self._call(lambda: self.redis.hgetall(self.key("job", job_id, "in")))
        return {k.decode(): v for k, v in found.items()} if found else None

    async def claim(self, job_id: str) -> Job | None:
        token = f"{self.consumer}:{uuid.uuid4().hex[:8]}"
        job = job_from_hash(await self._script("claim", job_id, self._now(), token))
        if job is not None:
            self._owned[job_id] = token
        return job

    async def progress(
        self, job_id: str, progress: float, stage: str | None, timings: dict[str, float] | None = None
    ) -> Job | None:
        return job_from_hash(
            await self._script("progress", job_id, repr(float(progress)), stage or "", json.dumps(timings or {}))
        )

    async def finish(self, job_id: str, result: JobResult) -> Job | None:
        try:
            fields = await self._artifact_fields(job_id, result.artifacts)
        except ResultTooLarge as e:
            return await self.fail(job_id, "result_too_large", str(e))
        flat: list[Any] = []
        for name, value in fields.items():
            flat += [name, value]
        reply = await self._script(
            "finish", job_id, self._now(), repr(self.ttl_s), json.dumps(result.metrics), len(fields), *flat
        )
        return self._settled(job_id, job_from_hash(reply))

    async def _artifact_fields(self, job_id: str, artifacts: dict[str, bytes]) -> dict[str, bytes]:
        """Small artifacts go into Redis as they are; larger ones onto the shared volume (`result_dir`)."""
        fields: dict[str, bytes] = {}
        for name, data in artifacts.items():
            if len(data) <= self.result_max_bytes:
                fields[f"a:{name}"] = data
                continue
            if self.result_dir is None:
                raise ResultTooLarge(
                    f"the {name} result is {len(data)} bytes, above redis_result_max_bytes "
                    f"({self.result_max_bytes}); set LAWM_RESULT_DIR to a volume shared by the API and the "
                    "workers, or raise LAWM_REDIS_RESULT_MAX_BYTES"
                )
            path = self.result_dir / job_id / _artifact_file(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)  # atomic: a reader never sees half a file, a retried worker rewrites it whole
            fields[f"f:{name}"] = str(path).encode()
        return fields

    async def fail(self, job_id: str, code: str, message: str) -> Job | None:
        token = self._owned.get(job_id, "")
        error = json.dumps({"code": code, "message": message})
        reply = await self._script("fail", job_id, self._now(), repr(self.ttl_s), error, token)
        return self._settled(job_id, job_from_hash(reply))

    async def mark_cancelled(self, job_id: str) -> Job | None:
        token = self._owned.get(job_id, "")
        reply = await self._script("mark_cancelled", job_id, self._now(), repr(self.ttl_s), token)
        return self._settled(job_id, job_from_hash(reply))

    def _settled(self, job_id: str, job: Job | None) -> Job | None:
        """Forget our claim on a job that has ended (or is gone)."""
        if job is None or job.done:
            self._owned.pop(job_id, None)
        return job

    async def cancel(self, job_id: str) -> Job | None:
        return job_from_hash(await self._script("cancel", job_id, self._now(), repr(self.ttl_s)))

    async def result(self, job_id: str) -> JobResult | None:
        found = await self._call(lambda: self.redis.hgetall(self.key("job", job_id, "out")))
        if not found or b"metrics" not in found:
            return None
        artifacts: dict[str, bytes] = {}
        for field, value in found.items():
            kind, _, name = field.decode().partition(":")
            if kind == "a":
                artifacts[name] = value
            elif kind == "f":
                try:
                    artifacts[name] = Path(value.decode()).read_bytes()
                except FileNotFoundError:
                    return None  # the volume's copy was purged: the result is gone
        return JobResult(metrics=json.loads(found[b"metrics"]), artifacts=artifacts)

    async def list_jobs(self, state: JobState | None = None) -> list[Job]:
        await self.purge_expired()
        states = [state] if state is not None else list(JobState)

        async def ids() -> list[bytes]:
            pipe = self.redis.pipeline(transaction=False)
            for s in states:
                pipe.zrange(self.key("state", s.value), 0, -1)
            return [i for found in await pipe.execute() for i in found]

        job_ids = await self._call(ids)

        async def fetch() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.hgetall(self.key("job", job_id.decode()))
            return list(await pipe.execute())

        jobs = [j for j in map(job_from_hash, await self._call(fetch)) if j is not None]
        return sorted((j for j in jobs if state is None or j.state is state), key=lambda j: j.created_at)

    async def counts(self) -> dict[JobState, int]:
        await self.purge_expired()

        async def cards() -> list[int]:
            pipe = self.redis.pipeline(transaction=False)
            for s in JobState:
                pipe.zcard(self.key("state", s.value))
            return list(await pipe.execute())

        return dict(zip(JobState, await self._call(cards), strict=True))

    async def purge_expired(self) -> int:
        """Drop ended jobs past their TTL from the state index (their hashes expire by themselves) and
        their renders from the shared volume."""
        now = self._clock()

        async def purge() -> int:
            pipe = self.redis.pipeline(transaction=False)
            for s in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
                pipe.zremrangebyscore(self.key("state", s.value), "-inf", now)
            return sum(await pipe.execute())

        purged = await self._call(purge)
        if self.result_dir is not None and now >= self._next_file_purge and self.result_dir.is_dir():
            self._next_file_purge = now + FILE_PURGE_EVERY_S
            for folder in self.result_dir.iterdir():
                try:
                    if folder.is_dir() and folder.stat().st_mtime < now - self.ttl_s:
                        for f in folder.iterdir():
                            f.unlink(missing_ok=True)
                        folder.rmdir()
                except OSError:  # another replica purged it first
                    continue
        return purged

    # -- the queue (workers)
    async def ensure_group(self) -> None:
        """The stream and its consumer group, from the stream's first entry (entries added before the
        first worker started are not skipped)."""
        try:
            await self._call(lambda: self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True))
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def read(self, count: int, block_ms: int) -> list[Entry]:
        """Up to `count` new entries for this consumer, waiting up to `block_ms` for one."""
        reply = await self._call(
            lambda: self.redis.xreadgroup(GROUP, self.consumer, {self.stream: ">"}, count=count, block=block_ms)
        )
        return [_entry(entry_id, fields) for _, entries in reply or [] for entry_id, fields in entries]

    async def autoclaim(self, min_idle_s: float, count: int) -> list[Entry]:
        """Entries idle (unrenewed) for `min_idle_s` in another consumer's hands: that worker is gone."""
        entries: list[Entry] = []
        start = "0-0"
        while len(entries) < count:
            reply = await self._call(
                lambda start=start, n=count - len(entries): self.redis.xautoclaim(
                    self.stream, GROUP, self.consumer, int(min_idle_s * 1000), start_id=start, count=n
                )
            )
            start, claimed = reply[0], reply[1]
            entries += [_entry(entry_id, fields) for entry_id, fields in claimed if fields]
            if start in (b"0-0", "0-0"):
                break
        return entries

    async def renew(self, entry_ids: list[str]) -> None:
        """Reset the idle time of entries this worker is running, so nobody reclaims them."""
        if entry_ids:
            await self._call(
                lambda: self.redis.xclaim(self.stream, GROUP, self.consumer, 0, entry_ids, justid=True)
            )

    async def ack(self, entry_id: str) -> None:
        async def ack_and_delete() -> None:
            pipe = self.redis.pipeline(transaction=True)
            pipe.xack(self.stream, GROUP, entry_id)
            pipe.xdel(self.stream, entry_id)
            await pipe.execute()

        await self._call(ack_and_delete)

    async def requeue(self, job_id: str) -> str:
        """A reclaimed job back to queued (or failed after `max_attempts` starts); see `redis_lua.REQUEUE`."""
        message = (
            f"the job was started {self.max_attempts} time(s) and its worker stopped each time without "
            "finishing it (killed, out of memory, or lost); it was moved to the dead-letter stream"
        )
        reply = await self._script("requeue", job_id, self._now(), repr(self.ttl_s), self.max_attempts, message)
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    async def release(self, entry: Entry) -> str:
        """Hand a running job back for another worker right away (graceful shutdown)."""
        token = self._owned.pop(entry.job_id, "")
        reply = await self._script("release", entry.job_id, self._now(), repr(self.ttl_s), entry.entry_id, token)
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    async def dead_letter(self, entry: Entry, reason: str) -> None:
        """Record a job given up on in the dead-letter stream and take its entry off the queue."""
        fields = {"job": entry.job_id, "entry": entry.entry_id, "reason": reason, "at": self._now()}

        async def move() -> None:
            pipe = self.redis.pipeline(transaction=True)
            pipe.xadd(self.dead_stream, fields, maxlen=10_000, approximate=True)
            pipe.xack(self.stream, GROUP, entry.entry_id)
            pipe.xdel(self.stream, entry.entry_id)
            await pipe.execute()

        await self._call(move)

    async def heartbeat(self, info: dict[str, Any], ttl_s: float) -> None:
        now = self._clock()

        async def beat() -> None:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zadd(self.key("workers"), {self.consumer: now})
            pipe.set(self.key("worker", self.consumer), json.dumps(info), px=int(ttl_s * 1000))
            await pipe.execute()

        await self._call(beat)

    async def live_workers(self, within_s: float) -> int:
        """Workers that sent a heartbeat in the last `within_s` seconds."""
        now = self._clock()
        return int(await self._call(lambda: self.redis.zcount(self.key("workers"), now - within_s, "+inf")))

    async def leave(self) -> None:
        """Forget this worker (graceful exit): its heartbeat, and its consumer once it holds no entries."""
        async def go() -> None:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrem(self.key("workers"), self.consumer)
            pipe.delete(self.key("worker", self.consumer))
            await pipe.execute()
            pending = await self.redis.xpending_range(self.stream, GROUP, "-", "+", 1, consumername=self.consumer)
            if not pending:
                await self.redis.xgroup_delconsumer(self.stream, GROUP, self.consumer)

        await self._call(go)

    async def dead_letters(self) -> list[dict[str, str]]:
        entries = await self._call(lambda: self.redis.xrange(self.dead_stream))
        return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


def _entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Entry:
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return Entry(eid, fields[b"job"].decode())


def connect(url: str, timeout_s: float = 2.0, blocking_reads: bool = False, retries: int | None = None) -> aioredis.Redis:
    """A client for `url` (bytes in, bytes out). Commands fail fast (`timeout_s`) so a Redis outage is a
    prompt 503, not a hung request; a worker's client also waits out its blocking reads."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"redis_url must start with redis://, rediss:// or unix://, got {url!r} (LAWM_REDIS_URL)")
    # The API retries once at once (a pooled connection gone stale across a Redis restart); a worker
    # rides out a short outage (about 5 s) inside a job rather than losing the attempt.
    if retries is None:
        retries = 6 if blocking_reads else 1
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.1), retries) if blocking_reads else Retry(NoBackoff(), retries)
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s + (5.0 if blocking_reads else 0.0),
        health_check_interval=30,
        retry=retry,
    )


__all__ = ["Entry", "RedisError", "RedisJobStore", "ResultTooLarge", "connect"]
