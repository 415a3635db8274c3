"""Scale-out as operators run it: two `lawm serve` replicas and two `lawm worker` processes on the tiny
exported model, sharing a real redis-server (AOF on), all real processes on loopback ports.

Each test prints its counts (jobs submitted / completed / duplicated / lost) and asserts them:
every job done exactly once in its visible result, also when a worker is SIGKILLed mid-job and
when Redis is stopped and restarted.
"""

from __future__ import annotations

import io
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from service.bench.cluster import LocalCluster, Proc, submit_transfer, wait_jobs
from service.bench.jobs import attempts_of, drill_redis_restart, drill_worker_kill, sample_pair, tally
from tests.integration.redis.conftest import need_redis_server
from tests.service_fixtures import TINY_NAME, TINY_VERSION

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tiny_model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    need_redis_server()
    env = {
        "LAWM_REPO": str(tiny_model_repo), "LAWM_MODEL": TINY_NAME, "LAWM_VERSION": str(TINY_VERSION),
        "LAWM_RUNTIME": "onnxruntime", "LAWM_MAX_BATCH_SIZE": "4", "LAWM_PLAN_MAX_BATCH_SIZE": "8",
        "LAWM_MAX_FRAMES": "64", "LAWM_WORKER_HEARTBEAT_S": "0.5", "LAWM_JOB_VISIBILITY_TIMEOUT_S": "4",
        "LAWM_DRAIN_TIMEOUT_S": "5", "LAWM_REDIS_TIMEOUT_S": "5",  # fsync stalls on a busy disk are not outages
    }
    with LocalCluster(tmp_path_factory.mktemp("cluster"), env, appendonly=True) as c:
        c.wait_ready(c.start("api", 2) + c.start("worker", 2))
        yield c


@pytest.fixture(scope="module")
def clips() -> tuple[bytes, bytes]:
    return sample_pair()


def role(cluster: LocalCluster, name: str) -> list[Proc]:
    return [p for p in cluster.procs if p.role == name and p.alive()]


def report(name: str, counts: dict[str, Any]) -> None:
    print(f"\n[{name}] " + json.dumps(counts, sort_keys=True))  # shown with -s, and in the log of a failure


def test_jobs_across_two_apis_and_two_workers_run_exactly_once(cluster: LocalCluster, clips: tuple[bytes, bytes]) -> None:
    apis, workers = role(cluster, "api"), role(cluster, "worker")
    urls = [a.url for a in apis]
    before = sum(httpx.get(w.url + "/readyz").json()["counts"]["done"] for w in workers)
    with httpx.Client(timeout=60) as client:
        requests = {}
        for i in range(12):
            r = submit_transfer(client, urls[i % 2], *clips)
            assert r.status_code == 202, r.text
            assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
            requests[f"r{i}"] = [r.json()["id"]]
        ids = [v[0] for v in requests.values()]
        views = wait_jobs(client, urls[1], ids)  # watched through the other replica
        counts = tally(client, urls, requests, views, attempts_of(cluster.redis_url, ids))
        report("lifecycle", counts)
        assert counts == {"submitted": 12, "completed": 12, "duplicated": 0, "lost": 0, "restarts": 0}
        done = sum(httpx.get(w.url + "/readyz").json()["counts"]["done"] for w in workers) - before
        assert done == 12  # each job ran to its end once, in one worker or the other

        mp4 = [client.get(f"{u}/v1/jobs/{ids[0]}/result").content for u in urls]
        assert mp4[0] == mp4[1] and len(mp4[0]) > 0
        with av.open(io.BytesIO(mp4[0])) as container:
            assert len(list(container.decode(video=0))) == 16  # the same render as in-process (8 states x 2)
        listed = client.get(urls[0] + "/v1/jobs", params={"state": "succeeded"}).json()["jobs"]
        assert set(ids) <= {j["id"] for j in listed}
        metrics = client.get(urls[0] + "/metrics").text
        assert 'lawm_jobs{state="succeeded"}' in metrics
        ready = client.get(urls[0] + "/readyz").json()
        assert ready["redis"]["ok"] is True and ready["redis"]["workers"] == 2


def test_duplicate_idempotency_key_across_replicas_is_one_job(cluster: LocalCluster, clips: tuple[bytes, bytes]) -> None:
    urls = [a.url for a in role(cluster, "api")]
    answers: dict[int, httpx.Response] = {}

    def post(i: int) -> None:
        with httpx.Client(timeout=60) as client:
            answers[i] = submit_transfer(client, urls[i % 2], *clips, key="order-42")

    threads = [threading.Thread(target=post, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [answers[i].status_code for i in range(4)] == [202] * 4
    ids = {answers[i].json()["id"] for i in range(4)}
    replayed = sum(answers[i].headers.get("idempotent-replayed") == "true" for i in range(4))
    report("idempotency", {"submitted": 4, "jobs": len(ids), "replayed": replayed})
    assert len(ids) == 1 and replayed == 3
    with httpx.Client(timeout=60) as client:
        other = submit_transfer(client, urls[1], clips[1], clips[0], key="order-42")  # same key, other body
        assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
        [job_id] = ids
        assert wait_jobs(client, urls[0], [job_id])[job_id]["state"] == "succeeded"
        assert attempts_of(cluster.redis_url, [job_id]) == {job_id: 1}


def test_redis_restart_loses_no_accepted_job(cluster: LocalCluster, clips: tuple[bytes, bytes]) -> None:
    apis = role(cluster, "api")
    result = drill_redis_restart(cluster, apis, clips, jobs=6, down_s=2.5)
    report("Redis restart", result)
    assert {k: result[k] for k in ("submitted", "completed", "duplicated", "lost")} == {
        "submitted": 6, "completed": 6, "duplicated": 0, "lost": 0}
    assert result["sync_failed"] == 0 and result["sync_requests"] > 0  # sync endpoints never failed
    assert result["refused_while_down"] > 0 and result["retry_after"] == ["5"]  # 503 + Retry-After meanwhile
    assert result["readyz_while_down"] == [200]  # the replicas stayed in service
    with httpx.Client(timeout=60) as client:  # and jobs work again by themselves
        r = submit_transfer(client, apis[0].url, *clips)
        assert r.status_code == 202
        job_id = r.json()["id"]
        assert wait_jobs(client, apis[1].url, [job_id])[job_id]["state"] == "succeeded"
        ready = client.get(apis[1].url + "/readyz").json()
        assert ready["redis"]["ok"] is True


def test_worker_sigkilled_mid_job_is_reclaimed_and_completes(cluster: LocalCluster, clips: tuple[bytes, bytes]) -> None:
    result = drill_worker_kill(cluster, role(cluster, "api"), role(cluster, "worker"), clips, jobs=6)
    report("worker SIGKILL", result)
    assert {k: result[k] for k in ("submitted", "completed", "duplicated", "lost")} == {
        "submitted": 6, "completed": 6, "duplicated": 0, "lost": 0}
    assert result["killed_job_state"] == "succeeded" and result["killed_job_attempts"] == 2  # taken over once
    assert len(role(cluster, "worker")) == 1


def test_sigterm_lets_a_worker_finish_its_job_and_leave(cluster: LocalCluster, clips: tuple[bytes, bytes]) -> None:
    """The last worker gets SIGTERM in the middle of a job: it finishes it (drain), acknowledges it and exits."""
    from service.bench.jobs import running_job_of

    [api, _] = role(cluster, "api")
    [worker] = role(cluster, "worker")
    with httpx.Client(timeout=60) as client:
        ids = [submit_transfer(client, api.url, *clips).json()["id"] for _ in range(2)]
        found = None
        for _ in range(20_000):  # bounded: the two jobs take a second or so
            found = running_job_of(cluster, [worker])  # frozen (SIGSTOP) in the middle of a job
            if found is not None:
                break
        assert found is not None, "the worker was never seen running a job"
        _, job_id = found
        worker.popen.send_signal(signal.SIGTERM)
        worker.popen.send_signal(signal.SIGCONT)
        assert worker.popen.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
        assert "stopped:" in worker.tail()
        assert client.get(f"{api.url}/v1/jobs/{job_id}").json()["state"] == "succeeded"
        assert attempts_of(cluster.redis_url, [job_id]) == {job_id: 1}  # finished by the worker that started it
        other = next(i for i in ids if i != job_id)
        assert client.get(f"{api.url}/v1/jobs/{other}").json()["state"] in ("queued", "succeeded")  # never lost
