"""ServiceMetrics: the exported names follow Prometheus conventions, each app has its own registry,
a batch updates the batcher's figures, and the middleware labels requests by route template."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from service.inference.batching import DynamicBatcher
from service.inference.errors import QueueFull
from service.metrics import BATCH_SIZE_BUCKETS, MetricsMiddleware, ServiceMetrics

EXPECTED = {  # family name -> type, as a Prometheus server reads /metrics
    "lawm_requests": "counter",
    "lawm_request_duration_seconds": "histogram",
    "lawm_inflight_requests": "gauge",
    "lawm_queue_duration_seconds": "histogram",
    "lawm_compute_duration_seconds": "histogram",
    "lawm_batch_size": "histogram",
    "lawm_queue_depth": "gauge",
    "lawm_rejections": "counter",
    "lawm_jobs": "gauge",
    "lawm_model_info": "gauge",
}


def families(metrics: ServiceMetrics) -> dict[str, set[str]]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=")  # the Prometheus text format
    found: dict[str, set[str]] = {}
    for f in text_string_to_metric_families(body.decode()):
        found.setdefault(f.name, set()).add(f.type)
    return found


def sample(metrics: ServiceMetrics, metric: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(metric, labels)


def test_names_types_and_units_follow_the_conventions() -> None:
    m = ServiceMetrics()
    m.batcher("encoder")
    found = families(m)
    for name, kind in EXPECTED.items():
        assert kind in found.get(name, set()), name
    # lawm_jobs is both a gauge (now) and a counter (lawm_jobs_total, entered each state)
    text = m.render()[0].decode()
    assert "# TYPE lawm_jobs gauge" in text and "# TYPE lawm_jobs_total counter" in text
    assert "# TYPE lawm_requests_total counter" in text and "# TYPE lawm_rejections_total counter" in text
    le = [s.labels["le"] for f in text_string_to_metric_families(text) if f.name == "lawm_batch_size"
          for s in f.samples if s.name.endswith("_bucket")]
    assert le == [f"{float(b)}" for b in BATCH_SIZE_BUCKETS] + ["+Inf"]


def test_each_instance_owns_its_registry() -> None:
    a, b = ServiceMetrics(), ServiceMetrics()  # would raise "Duplicated timeseries" on a shared registry
    a.batcher("idm").observe_batch(3, 0.1)
    assert sample(a, "lawm_batch_size_count", component="idm") == 1.0
    assert sample(b, "lawm_batch_size_count", component="idm") is None


def test_a_batch_updates_batch_size_queue_and_compute_time_and_depth() -> None:
    m = ServiceMetrics()

    async def scenario() -> None:
        b = DynamicBatcher("encoder", lambda x: {"y": x["x"] @ np.eye(3, dtype=np.float32)}, max_batch_size=4,
                           max_queue_delay_ms=3_600_000.0, max_queue_rows=4, metrics=m.batcher("encoder"))
        await b.start()
        outs = await asyncio.gather(*(b.submit({"x": np.full((2, 3), v, np.float32)}) for v in (1.0, 2.0)))
        assert [o["y"][0, 0] for o in outs] == [1.0, 2.0]
        await b.drain(5)

    asyncio.run(scenario())
    assert sample(m, "lawm_batch_size_count", component="encoder") == 1.0  # the two requests shared one batch
    assert sample(m, "lawm_batch_size_sum", component="encoder") == 4.0
    assert sample(m, "lawm_batch_size_bucket", component="encoder", le="4.0") == 1.0
    assert sample(m, "lawm_batch_size_bucket", component="encoder", le="2.0") == 0.0
    assert sample(m, "lawm_compute_duration_seconds_count", component="encoder") == 1.0
    assert sample(m, "lawm_queue_duration_seconds_count", component="encoder") == 2.0  # one per request
    assert sample(m, "lawm_queue_depth", component="encoder") == 0.0


def test_rejections_are_counted_by_component_and_reason() -> None:
    m = ServiceMetrics()

    async def scenario() -> None:
        b = DynamicBatcher("idm", lambda x: {"y": x["x"]}, max_batch_size=2, max_queue_delay_ms=3_600_000.0,
                           max_queue_rows=2, metrics=m.batcher("idm"))
        await b.start()
        waiting = asyncio.create_task(b.submit({"x": np.zeros((1, 3))}))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert sample(m, "lawm_queue_depth", component="idm") == 1.0
        with pytest.raises(QueueFull):
            await b.submit({"x": np.zeros((2, 3))})
        await b.drain(5)
        await waiting

    asyncio.run(scenario())
    assert sample(m, "lawm_rejections_total", component="idm", reason="queue_full") == 1.0


def test_jobs_and_model_info() -> None:
    m = ServiceMetrics()
    assert sample(m, "lawm_jobs", state="running") == 0.0  # every state exported from the start
    m.job_transition(None, "queued")
    m.job_transition("queued", "running")
    m.job_transition("running", "succeeded")
    assert [sample(m, "lawm_jobs", state=s) for s in ("queued", "running", "succeeded")] == [0.0, 0.0, 1.0]
    assert [sample(m, "lawm_jobs_total", state=s) for s in ("queued", "running", "succeeded")] == [1.0, 1.0, 1.0]
    m.set_model("demo", 1, "onnxruntime")
    m.set_model("demo", 2, "onnxruntime")  # a reload replaces the old version's series
    assert sample(m, "lawm_model_info", name="demo", version="2", runtime="onnxruntime") == 1.0
    assert sample(m, "lawm_model_info", name="demo", version="1", runtime="onnxruntime") is None


def test_middleware_labels_requests_by_route_template_and_status() -> None:
    m = ServiceMetrics()
    app = FastAPI()

    @app.get("/v1/jobs/{job_id}")
    async def job(job_id: str) -> dict[str, str]:
        if job_id == "boom":
            raise RuntimeError("boom")
        return {"id": job_id}

    app.add_middleware(MetricsMiddleware, metrics=m)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for job_id in ("a", "b", "boom"):
                await client.get(f"/v1/jobs/{job_id}")
            await client.get("/nowhere")

    asyncio.run(scenario())
    assert sample(m, "lawm_requests_total", endpoint="/v1/jobs/{job_id}", method="GET", status="200") == 2.0
    assert sample(m, "lawm_requests_total", endpoint="/v1/jobs/{job_id}", method="GET", status="500") == 1.0
    assert sample(m, "lawm_requests_total", endpoint="unmatched", method="GET", status="404") == 1.0
    assert sample(m, "lawm_request_duration_seconds_count", endpoint="/v1/jobs/{job_id}") == 3.0
    assert sample(m, "lawm_inflight_requests") == 0.0
