"""Prometheus metrics of the service, in the ecosystem's conventions (base units: seconds and rows;
counters end in `_total`).

`ServiceMetrics` owns its own `CollectorRegistry`, so several apps (and tests) in one process never
collide on metric names. The app holds one on `app.state.metrics`, serves `render()` on `/metrics`,
hands each component's `DynamicBatcher` a `BatcherMetrics` view, and wraps itself in
`MetricsMiddleware` for the per-request figures.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

# Request latency spans a robot's plan call (ms) to a render (tens of s).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# Queue and compute time of one component call: sub-ms to seconds.
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")


class ServiceMetrics:
    """Every metric the service exports, registered on a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "lawm_requests", "HTTP requests answered, by route template, method and status code.",
            ["endpoint", "method", "status"], registry=r,
        )
        self.request_duration = Histogram(
            "lawm_request_duration_seconds", "Time from request received to response sent, by route template.",
            ["endpoint"], buckets=REQUEST_BUCKETS, registry=r,
        )
        self.inflight = Gauge("lawm_inflight_requests", "HTTP requests being handled now.", registry=r)
        self.queue_duration = Histogram(
            "lawm_queue_duration_seconds", "Time a request waited in a component's batch queue before its first rows ran.",
            ["component"], buckets=STAGE_BUCKETS, registry=r,
        )
        self.compute_duration = Histogram(
            "lawm_compute_duration_seconds", "Time of one batch execution of a component.",
            ["component"], buckets=STAGE_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "lawm_batch_size", "Rows in each batch a component executed.",
            ["component"], buckets=BATCH_SIZE_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge("lawm_queue_depth", "Rows waiting in a component's batch queue.", ["component"], registry=r)
        self.rejections = Counter(
            "lawm_rejections", "Requests a component's batcher turned away or dropped, by reason "
            "(queue_full, queue_wait, deadline, cancelled, shutting_down, too_large).",
            ["component", "reason"], registry=r,
        )
        # lawm_jobs (gauge) and lawm_jobs_total (counter) share the family name "lawm_jobs", which the
        # registry's duplicate check refuses across collectors; one collector exports both.
        self.jobs = Gauge("lawm_jobs", "Jobs currently in each state.", ["state"], registry=None)
        self.jobs_total = Counter("lawm_jobs", "Jobs that entered each state.", ["state"], registry=None)
        r.register(_Together(self.jobs, self.jobs_total))
        self.model_info = Gauge(
            "lawm_model_info", "The model being served (value always 1).", ["name", "version", "runtime"], registry=r,
        )
        self.startup_seconds = Gauge(
            "lawm_startup_seconds", "Seconds each start-up phase took (export, load, warm), once done.", ["phase"],
            registry=r,
        )
        # process_resident_memory_bytes, process_cpu_seconds_total, ...: the registry is our own, so
        # prometheus_client's default process collector is not on it.
        ProcessCollector(registry=r)
        for state in JOB_STATES:  # export zeros from the start, so rate() and dashboards see every state
            self.jobs.labels(state=state).set(0)
            self.jobs_total.labels(state=state)

    def batcher(self, component: str) -> BatcherMetrics:
        return BatcherMetrics(self, component)

    def set_model(self, name: str, version: str | int, runtime: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name=name, version=str(version), runtime=runtime).set(1)

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint=endpoint, method=method, status=str(status)).inc()
        self.request_duration.labels(endpoint=endpoint).observe(seconds)

    def job_transition(self, old: str | None, new: str) -> None:
        """A job moved from `old` (None: just created) to `new`."""
        if old is not None:
            self.jobs.labels(state=old).dec()
        self.jobs.labels(state=new).inc()
        self.jobs_total.labels(state=new).inc()

    def render(self) -> tuple[bytes, str]:
        """The `/metrics` body and its content type (Prometheus text format)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Together(Collector):
    """Several metrics exported by one collector."""

    def __init__(self, *metrics: Collector) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        for m in self.metrics:
            yield from m.collect()

    def describe(self) -> Iterable[Metric]:
        return self.collect()


class BatcherMetrics:
    """One component's view of `ServiceMetrics`, updated by its `DynamicBatcher`."""

    def __init__(self, service: ServiceMetrics, component: str) -> None:
        self.component = component
        self._depth = service.queue_depth.labels(component=component)
        self._queue = service.queue_duration.labels(component=component)
        self._compute = service.compute_duration.labels(component=component)
        self._batch = service.batch_size.labels(component=component)
        self._rejections = service.rejections
        self._depth.set(0)

    def set_queue_depth(self, rows: int) -> None:
        self._depth.set(rows)

    def observe_queue(self, seconds: float) -> None:
        self._queue.observe(seconds)

    def observe_batch(self, rows: int, compute_s: float) -> None:
        self._batch.observe(rows)
        self._compute.observe(compute_s)

    def reject(self, reason: str) -> None:
        self._rejections.labels(component=self.component, reason=reason).inc()


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class MetricsMiddleware:
    """Pure ASGI middleware: lawm_requests_total, lawm_request_duration_seconds, lawm_inflight_requests.

    The endpoint label is the matched route's template (`/v1/jobs/{job_id}`), never the raw path, so
    ids cannot blow up the label set; unmatched paths count as "unmatched".
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees if the app raises before starting a response
        t0 = time.perf_counter()

        async def send_with_status(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.inflight.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.inflight.dec()
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(endpoint, scope["method"], status, time.perf_counter() - t0)
