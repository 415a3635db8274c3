"""A scale-out deployment on one machine, as processes: a redis-server, `lawm serve` replicas and
`lawm worker`s, all on free loopback ports (`lawm bench jobs` and the fault tests use it).

    with LocalCluster(folder, model_env) as cluster:
        apis = cluster.start("api", 2); workers = cluster.start("worker", 2)
        cluster.wait_ready(apis + workers)
        job_id = submit_transfer(apis[0].url, clip_a, clip_b)

Every process logs to `folder/<name>.log`; whatever is still running is killed on exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from service.bench.processes import free_port
from service.bench.redis_server import RedisServer

LAWM = str(Path(sys.executable).with_name("lawm"))


@dataclass
class Proc:
    name: str
    role: str  # "api" | "worker"
    popen: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@dataclass
class LocalCluster:
    folder: Path
    env: dict[str, str]  # LAWM_* of every process (model, repo, timeouts, ...)
    appendonly: bool = True  # the Redis keeps an AOF: a restart loses nothing acknowledged
    use_redis: bool = True  # False: API replicas with their in-process job store, no Redis at all
    redis: RedisServer | None = None
    procs: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.use_redis and self.redis is None:
            self.redis = RedisServer.start_new(self.folder / "redis", appendonly=self.appendonly)

    @property
    def redis_url(self) -> str:
        if self.redis is None:
            raise RuntimeError("this cluster runs without Redis (use_redis=False)")
        return self.redis.url

    def start(self, role: str, count: int = 1, extra_env: dict[str, str] | None = None) -> list[Proc]:
        """Start `count` processes of `role` ("api": `lawm serve`, "worker": `lawm worker`)."""
        started = []
        for _ in range(count):
            n = sum(p.role == role for p in self.procs)
            name, port = f"{role}{n}", free_port()
            log = self.folder / f"{name}.log"
            command = "serve" if role == "api" else "worker"
            env = {**os.environ, "LAWM_EXPORT_FROM": "", **self.env, **(extra_env or {})}
            env.pop("LAWM_REDIS_URL", None)
            if self.redis is not None:
                env["LAWM_REDIS_URL"] = self.redis_url
            with open(log, "w") as out:
                popen = subprocess.Popen([LAWM, command, "--port", str(port)], stdout=out,
                                         stderr=subprocess.STDOUT, env=env)
            proc = Proc(name, role, popen, f"http://127.0.0.1:{port}", log)
            self.procs.append(proc)
            started.append(proc)
        return started

    def wait_ready(self, procs: list[Proc], timeout_s: float = 180.0) -> None:
        """Until every one of `procs` answers /readyz with 200 (workers: warm and consuming)."""
        ends = time.monotonic() + timeout_s
        waiting = list(procs)
        while waiting:
            for proc in list(waiting):
                if not proc.alive():
                    raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(proc.url + "/readyz", timeout=5).status_code == 200:
                        waiting.remove(proc)
            if waiting and time.monotonic() > ends:
                raise RuntimeError(f"{[p.name for p in waiting]} never became ready:\n{waiting[0].tail()}")
            time.sleep(0.1)

    def signal(self, proc: Proc, sig: int = signal.SIGTERM, wait_s: float = 60.0) -> int | None:
        """Send `sig`; for SIGTERM/SIGKILL wait for the exit code."""
        if proc.alive():
            proc.popen.send_signal(sig)
        if sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGINT):
            return proc.popen.wait(wait_s)
        return None

    def close(self) -> None:
        for proc in self.procs:
            if proc.alive():
                proc.popen.kill()
                proc.popen.wait(30)
        if self.redis is not None:
            self.redis.stop()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


# ----------------------------------------------------------------------------- client side
def submit_transfer(
    client: httpx.Client, url: str, clip_a: bytes, clip_b: bytes, key: str | None = None,
    api_key: str | None = None, options: dict[str, Any] | None = None,
) -> httpx.Response:
    """POST /v1/transfers with two uploaded clips (and an Idempotency-Key when given)."""
    import json

    headers = {}
    if key is not None:
        headers["Idempotency-Key"] = key
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    files = {"clip_a": ("a.mp4", clip_a, "video/mp4"), "clip_b": ("b.mp4", clip_b, "video/mp4")}
    data = {"request": json.dumps(options)} if options else None
    return client.post(url + "/v1/transfers", files=files, data=data, headers=headers, timeout=60)


def submit_accepted(client: httpx.Client, url: str, clip_a: bytes, clip_b: bytes, attempts: int = 10) -> str:
    """Submit until the job is accepted (202), as a client honouring 503 + Retry-After does; its id."""
    for _ in range(attempts):
        r = submit_transfer(client, url, clip_a, clip_b)
        if r.status_code == 202:
            return str(r.json()["id"])
        if r.status_code != 503:
            r.raise_for_status()
        time.sleep(min(float(r.headers.get("retry-after", 1)), 1.0))
    raise RuntimeError(f"{url} did not accept a job in {attempts} attempts: {r.status_code} {r.text}")


TERMINAL = ("succeeded", "failed", "cancelled")


def wait_jobs(
    client: httpx.Client, url: str, job_ids: list[str], timeout_s: float = 300.0, poll_s: float = 0.05,
    api_key: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Poll until every job ended (or the timeout); returns the last view of each job by id."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    last: dict[str, dict[str, Any]] = {}
    pending = set(job_ids)
    ends = time.monotonic() + timeout_s
    while pending and time.monotonic() < ends:
        for job_id in list(pending):
            with contextlib.suppress(httpx.HTTPError):
                r = client.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=10)
                if r.status_code == 200:
                    last[job_id] = r.json()
                    if last[job_id]["state"] in TERMINAL:
                        pending.discard(job_id)
        if pending:
            time.sleep(poll_s)
    return last
