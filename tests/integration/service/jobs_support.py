"""Helpers for the jobs and KServe tests: the app behind a real uvicorn server in a thread (for
clients that need a socket, like tritonclient), and a gate that holds a running job between two
steps so a test decides every interleaving."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

from service.settings import Settings


@contextlib.contextmanager
def serve_in_thread(settings: Settings, ready_timeout_s: float = 120.0) -> Iterator[tuple[str, Any]]:
    """`create_app(settings)` behind a real uvicorn server on a free port: (base url, app) once ready."""
    import uvicorn

    from service.app import create_app

    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        ends = time.monotonic() + ready_timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > ends:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        while httpx.get(url + "/readyz", timeout=10).status_code != 200:
            if time.monotonic() > ends:
                raise RuntimeError("the test server never became ready")
            time.sleep(0.1)
        yield url, app
    finally:
        server.should_exit = True
        thread.join(timeout=60)


class Gate:
    """Holds every engine call of one component until `open()`: the real engine still computes,
    the test only decides when. Install with `Gate(engine, "world_model_prefill")`."""

    def __init__(self, engine: Any, component: str) -> None:
        self.component, self.engine = component, engine
        self.event = asyncio.Event()
        self.waiting = 0
        self._run = engine.run

        async def run(name: str, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            if name == self.component and not self.event.is_set():
                self.waiting += 1
                try:
                    await self.event.wait()
                finally:
                    self.waiting -= 1
            return await self._run(name, inputs, *args, **kwargs)

        engine.run = run

    def open(self) -> None:
        self.event.set()

    def remove(self) -> None:
        self.event.set()
        self.engine.run = self._run


async def until(predicate: Any, what: str = "the condition", polls: int = 20_000) -> None:
    """Yield to the event loop until `predicate()` holds (bounded by a count of polls, not a clock)."""
    for _ in range(polls):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"gave up waiting for {what}")
