"""`lawm bench jobs`: transfer jobs through Redis and `lawm worker`s, measured on this machine, and the
fault drills whose counts the scale-out tests assert.

1. throughput: jobs per second with 1, then 2 workers behind one API replica (J jobs submitted at
   once; from the first 202 to the last job ended);
2. added latency of the Redis path: one small job at a time through `lawm serve` alone (in-process
   store) and through `lawm serve` + Redis + `lawm worker`; the jobs' own `queued_s` / `total_s`;
3. drills: a worker SIGKILLed mid-job, and Redis stopped and restarted (AOF), with counts of jobs
   submitted, completed, duplicated and lost, and of synchronous requests that failed meanwhile.

Everything runs as real processes on free loopback ports (`service.bench.cluster`).
"""

from __future__ import annotations

import signal
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from service.bench.cluster import LocalCluster, Proc, submit_accepted, submit_transfer, wait_jobs


@dataclass
class JobsBench:
    repo: Path
    model: str = "demo"
    version: int | None = 1
    runtime: str = "onnxruntime"
    jobs: int = 16  # jobs per throughput run
    latency_jobs: int = 10  # one-at-a-time jobs per path
    small_steps: int = 1  # latent steps of the "small job"
    drills: bool = True
    folder: Path = Path("runs/bench-jobs")
    extra_env: dict[str, str] | None = None

    def env(self) -> dict[str, str]:
        env = {
            "LAWM_REPO": str(self.repo.resolve()), "LAWM_MODEL": self.model, "LAWM_RUNTIME": self.runtime,
            "LAWM_VERSION": str(self.version) if self.version is not None else "latest",
            "LAWM_WORKER_HEARTBEAT_S": "0.5", "LAWM_JOB_VISIBILITY_TIMEOUT_S": "3", "LAWM_DRAIN_TIMEOUT_S": "10",
        }
        return {**env, **(self.extra_env or {})}


def sample_pair() -> tuple[bytes, bytes]:
    """The two real sample clips (carphone as A, bikes as B)."""
    from training.data.samples import sample_clips

    clips = sample_clips()
    return clips["carphone_pristine"].read_bytes(), clips["bikes"].read_bytes()


# ----------------------------------------------------------------------------- counting
def attempts_of(redis_url: str, job_ids: list[str], prefix: str = "lawm") -> dict[str, int]:
    """How many times each job was started by a worker (from Redis: the API does not show it)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        found = {}
        for job_id in job_ids:
            value = client.hget(f"{{{prefix}}}:job:{job_id}", "attempts")
            found[job_id] = int(value) if value is not None else 0
        return found
    finally:
        client.close()


def answer(client: httpx.Client, url: str, attempts: int = 10) -> str:
    """GET `url`'s body, retried as a client should on a 503 (Retry-After) or a dropped connection."""
    for _ in range(attempts - 1):
        try:
            r = client.get(url, timeout=30)
            if r.status_code != 503:
                return r.text
            time.sleep(min(float(r.headers.get("retry-after", 1)), 1.0))
        except httpx.TransportError:
            time.sleep(0.5)
    return client.get(url, timeout=30).text


def tally(
    client: httpx.Client, urls: list[str], requests: dict[str, list[str]], views: dict[str, dict[str, Any]],
    attempts: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Counts of a run. `requests`: logical request -> the job ids its (re)submissions got back;
    `views`: the last view of each job. A job is complete when it succeeded and every replica serves
    the same result; duplicated: a request that got more than one job, or a job whose result differs
    between replicas; lost: an accepted request whose job did not succeed."""
    duplicated = sum(len(set(ids)) > 1 for ids in requests.values())
    completed = lost = 0
    for ids in requests.values():
        job_id = ids[0]
        if views.get(job_id, {}).get("state") != "succeeded":
            lost += 1
            continue
        results = {answer(client, f"{u}/v1/jobs/{job_id}/result?format=json") for u in urls}
        if len(results) == 1:
            completed += 1
        else:
            duplicated += 1
    restarts = sum(max(a - 1, 0) for a in (attempts or {}).values())
    return {"submitted": len(requests), "completed": completed, "duplicated": duplicated, "lost": lost,
            "restarts": restarts}


# ----------------------------------------------------------------------------- drills
class SyncProbe:
    """Calls a synchronous endpoint on each replica in a loop (a thread) and counts the answers."""

    def __init__(self, urls: list[str], body: dict[str, Any]) -> None:
        self.urls, self.body = urls, body
        self.statuses: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sync-probe", daemon=True)

    def _loop(self) -> None:
        with httpx.Client(timeout=30) as client:
            i = 0
            while not self._stop.is_set():
                url = self.urls[i % len(self.urls)]
                try:
                    status = client.post(url + "/v1/latent-actions", json=self.body,
                                         headers={"Cache-Control": "no-cache"}).status_code
                except httpx.HTTPError:
                    status = 0  # no answer at all
                self.statuses[status] = self.statuses.get(status, 0) + 1
                i += 1

    def __enter__(self) -> SyncProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


def probe_body(urls: list[str]) -> dict[str, Any]:
    """A small /v1/latent-actions request: 8 frames of the model's size as base64 PNGs."""
    import base64

    from service.bench.loadgen import sample_clip_frames
    from training.data.video import encode_png_strip

    info = httpx.get(urls[0] + "/v1/models", timeout=30).json()["models"][0]
    frames = sample_clip_frames(int(info["image_size"]), float(info["fps"]), 8)
    return {"frames": [base64.b64encode(encode_png_strip(f[None])).decode() for f in frames]}


def running_job_of(cluster: LocalCluster, workers: list[Proc], prefix: str = "lawm") -> tuple[Proc, str] | None:
    """A (worker, job id) where that worker is running that job now, frozen there with SIGSTOP."""
    import redis

    client = redis.Redis.from_url(cluster.redis_url)
    try:
        for job_id in client.zrange(f"{{{prefix}}}:state:running", 0, -1):
            owner = (client.hget(f"{{{prefix}}}:job:{job_id.decode()}", "owner") or b"").decode()
            for worker in workers:
                if worker.alive() and f"-{worker.pid}-" in owner:
                    worker.popen.send_signal(signal.SIGSTOP)  # frozen mid-job: it cannot finish now
                    state, still = client.hmget(f"{{{prefix}}}:job:{job_id.decode()}", ["state", "owner"])
                    if state == b"running" and still is not None and still.decode() == owner:
                        return worker, job_id.decode()
                    worker.popen.send_signal(signal.SIGCONT)
        return None
    finally:
        client.close()


def drill_worker_kill(
    cluster: LocalCluster, apis: list[Proc], workers: list[Proc], clips: tuple[bytes, bytes], jobs: int = 6,
) -> dict[str, Any]:
    """Submit `jobs`, SIGKILL a worker in the middle of one, let the others finish everything."""
    urls = [a.url for a in apis]
    with httpx.Client(timeout=60) as client:
        requests: dict[str, list[str]] = {}
        for i in range(jobs):
            requests[f"r{i}"] = [submit_accepted(client, urls[i % len(urls)], *clips)]
        victim = None
        ends = time.monotonic() + 120
        while victim is None and time.monotonic() < ends:
            victim = running_job_of(cluster, workers)
            time.sleep(0.005)
        if victim is None:
            raise RuntimeError("no job was ever seen running: are the workers up?")
        worker, killed_job = victim
        cluster.signal(worker, signal.SIGKILL)
        ids = [ids[0] for ids in requests.values()]
        views = wait_jobs(client, urls[0], ids, timeout_s=300)
        attempts = attempts_of(cluster.redis_url, ids)
        counts = tally(client, urls, requests, views, attempts)
    return {**counts, "killed_worker": worker.name, "killed_job": killed_job,
            "killed_job_attempts": attempts.get(killed_job, 0),
            "killed_job_state": views.get(killed_job, {}).get("state")}


def drill_redis_restart(
    cluster: LocalCluster, apis: list[Proc], clips: tuple[bytes, bytes], jobs: int = 6, down_s: float = 3.0,
) -> dict[str, Any]:
    """Submit `jobs`, stop Redis mid-run (SIGTERM: the AOF is flushed), keep calling a synchronous
    endpoint and the job endpoints while it is down, restart it, and count."""
    assert cluster.redis is not None
    urls = [a.url for a in apis]
    with httpx.Client(timeout=60) as client, SyncProbe(urls, probe_body(urls)) as probe:
        requests: dict[str, list[str]] = {}
        for i in range(jobs):
            requests[f"r{i}"] = [submit_accepted(client, urls[i % len(urls)], *clips)]
        cluster.redis.stop()
        down_until = time.monotonic() + down_s
        refused, retry_after, ready = 0, set(), []
        while time.monotonic() < down_until:
            r = submit_transfer(client, urls[0], *clips)
            if r.status_code == 503:
                refused += 1
                retry_after.add(r.headers.get("retry-after"))
            else:  # accepted while down would be a bug; count it so nothing hides
                requests[f"down{len(requests)}"] = [r.json().get("id", "?")]
            ready.append(client.get(urls[1 % len(urls)] + "/readyz").status_code)
            time.sleep(0.2)
        cluster.redis.start()
        ids = [ids[0] for ids in requests.values()]
        views = wait_jobs(client, urls[0], ids, timeout_s=300)
        attempts = attempts_of(cluster.redis_url, ids)
        counts = tally(client, urls, requests, views, attempts)
    return {**counts, "refused_while_down": refused, "retry_after": sorted(x for x in retry_after if x),
            "readyz_while_down": sorted(set(ready)), "sync_requests": probe.total, "sync_failed": probe.failed,
            "sync_statuses": {str(k): v for k, v in sorted(probe.statuses.items())}}


# ----------------------------------------------------------------------------- the bench
SUBMITTERS = 4  # clients submitting at once: the API decodes uploads in threads, so they overlap


def _throughput(client: httpx.Client, url: str, clips: tuple[bytes, bytes], jobs: int) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    def one(_: int) -> str:
        with httpx.Client(timeout=120) as c:
            r = submit_transfer(c, url, *clips)
            r.raise_for_status()
            return str(r.json()["id"])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(SUBMITTERS) as pool:
        ids = list(pool.map(one, range(jobs)))
    submitted = time.perf_counter() - t0
    views = wait_jobs(client, url, ids, timeout_s=600, poll_s=0.02)
    ended = [v for v in views.values() if v["state"] == "succeeded"]
    last_end = max(v["finished_at"] for v in ended) if ended else float("nan")
    first = min(v["created_at"] for v in views.values())
    span = last_end - first
    return {"jobs": jobs, "succeeded": len(ended), "submit_s": submitted, "span_s": span,
            "jobs_per_s": len(ended) / span if span > 0 else float("nan"),
            "run_s_p50": statistics.median(v["timings"]["run_s"] for v in ended) if ended else None}


def _latency(client: httpx.Client, url: str, clips: tuple[bytes, bytes], n: int, steps: int) -> dict[str, Any]:
    """One small job at a time: the server's own queued_s/total_s, and what a polling client sees."""
    queued, total, seen = [], [], []
    for _ in range(n + 1):  # the first one is a warm-up
        t0 = time.perf_counter()
        r = submit_transfer(client, url, *clips, options={"steps": steps})
        r.raise_for_status()
        job_id = r.json()["id"]
        view = wait_jobs(client, url, [job_id], timeout_s=120, poll_s=0.002)[job_id]
        seen.append(time.perf_counter() - t0)
        queued.append(view["timings"]["queued_s"])
        total.append(view["timings"]["total_s"])
    return {"queued_ms": 1000 * statistics.median(queued[1:]), "total_ms": 1000 * statistics.median(total[1:]),
            "client_ms": 1000 * statistics.median(seen[1:])}


def run(opts: JobsBench) -> dict[str, Any]:
    from training.cli_kit import machine

    clips = sample_pair()
    small = (clips[0], clips[1])
    rows: list[dict[str, Any]] = []
    tables: list[dict[str, Any]] = []
    lat: dict[str, dict[str, Any]] = {}

    # in-process path: `lawm serve` alone (no Redis)
    with LocalCluster(opts.folder / "inprocess", opts.env(), use_redis=False) as cluster:
        [api] = cluster.start("api")
        cluster.wait_ready([api])
        with httpx.Client(timeout=60) as client:
            lat["in-process"] = _latency(client, api.url, small, opts.latency_jobs, opts.small_steps)
            solo = _throughput(client, api.url, clips, opts.jobs)
    rows.append({"path": "in-process (lawm serve alone)", "workers": "-", **_fmt(solo)})

    with LocalCluster(opts.folder / "redis", opts.env()) as cluster:
        apis = cluster.start("api", 1)
        workers = cluster.start("worker", 1)
        cluster.wait_ready(apis + workers)
        url = apis[0].url
        with httpx.Client(timeout=60) as client:
            lat["redis"] = _latency(client, url, small, opts.latency_jobs, opts.small_steps)
            one = _throughput(client, url, clips, opts.jobs)
            rows.append({"path": "Redis + lawm worker", "workers": 1, **_fmt(one)})
            second = cluster.start("worker", 1)
            cluster.wait_ready(second)
            two = _throughput(client, url, clips, opts.jobs)
            rows.append({"path": "Redis + lawm worker", "workers": 2, **_fmt(two)})
        if opts.drills:
            api2 = cluster.start("api", 1)
            cluster.wait_ready(api2)
            kill = drill_worker_kill(cluster, apis + api2, workers + second, clips)
            restart = drill_redis_restart(cluster, apis + api2, clips)
            tables.append({"title": "Fault drills (2 API replicas; counts of jobs)", "rows": [
                {"drill": "worker SIGKILLed mid-job", **{k: kill[k] for k in _COUNTS},
                 "note": f"killed job started {kill['killed_job_attempts']}x, ended {kill['killed_job_state']}"},
                {"drill": "Redis stopped 3 s, restarted (AOF)", **{k: restart[k] for k in _COUNTS},
                 "note": f"{restart['sync_failed']}/{restart['sync_requests']} sync requests failed; "
                         f"{restart['refused_while_down']} submissions refused 503 (Retry-After "
                         f"{','.join(restart['retry_after'])}); /readyz {restart['readyz_while_down']}"},
            ]})

    added = {k: lat["redis"][k] - lat["in-process"][k] for k in ("queued_ms", "total_ms", "client_ms")}
    tables.insert(0, {"title": f"Latency of a small job ({opts.small_steps} latent step), one at a time (median of "
                               f"{opts.latency_jobs})", "rows": [
        {"path": "in-process", **{k: round(v, 1) for k, v in lat["in-process"].items()}},
        {"path": "Redis + lawm worker", **{k: round(v, 1) for k, v in lat["redis"].items()}},
        {"path": "added by Redis", **{k: round(v, 1) for k, v in added.items()}},
    ]})
    speedup = two["jobs_per_s"] / one["jobs_per_s"] if one["jobs_per_s"] else float("nan")
    return {
        "title": "Transfer jobs through Redis and lawm worker",
        "machine": machine(),
        "protocol": (f"{opts.jobs} transfer jobs (real sample clips carphone -> bikes, {opts.model} "
                     f"v{opts.version} on {opts.runtime}) submitted by {SUBMITTERS} clients at once through one "
                     "API replica; jobs/s = jobs / (last job ended - first job created); the API replica, the "
                     "workers and redis-server (AOF, fsync always) all share this machine's CPU cores"),
        "verdict": (f"2 workers: {speedup:.2f}x the jobs/s of 1; the Redis path adds "
                    f"{added['total_ms']:.1f} ms to a small job's total time (queued {added['queued_ms']:.1f} ms)"),
        "rows": rows,
        "tables": tables,
        "latency": lat,
        "added_latency_ms": added,
        "speedup_2_workers": speedup,
    }


_COUNTS = ("submitted", "completed", "duplicated", "lost", "restarts")


def _fmt(r: dict[str, Any]) -> dict[str, Any]:
    return {"jobs": r["jobs"], "succeeded": r["succeeded"], "jobs_per_s": round(r["jobs_per_s"], 2),
            "span_s": round(r["span_s"], 2), "run_s_p50": round(r["run_s_p50"] or 0.0, 3)}
