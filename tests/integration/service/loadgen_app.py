"""A tiny real service for the load generator's tests, run by uvicorn in its own process: one
endpoint that doubles a number through a real `DynamicBatcher`, answers every 4th request 429 (so
rejections are counted exactly), and serves real `/metrics`."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from service.inference.batching import DynamicBatcher
from service.metrics import MetricsMiddleware, ServiceMetrics

metrics = ServiceMetrics()
batcher = DynamicBatcher("doubler", lambda x: {"y": x["x"] * 2}, max_batch_size=8, max_queue_delay_ms=2.0,
                         max_queue_rows=256, metrics=metrics.batcher("doubler"))
counter = itertools.count()


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await batcher.start()
    yield
    await batcher.drain(5)


app = FastAPI(lifespan=lifespan)
app.add_middleware(MetricsMiddleware, metrics=metrics)


@app.post("/v1/double")
async def double(request: Request) -> Response:
    body = await request.body()
    if next(counter) % 4 == 3:
        return JSONResponse({"error": {"code": "queue_full"}}, status_code=429, headers={"Retry-After": "1"})
    out = await batcher.submit({"x": np.array([[float(len(body))]])})
    return JSONResponse({"y": float(out["y"][0, 0]), "timing": {"total_s": 0.001}})


@app.get("/livez")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/metrics")
async def metrics_route() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
