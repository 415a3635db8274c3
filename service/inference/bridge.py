"""Synchronous model code calling the engine from a worker thread: the planner, real-action rollouts.

The planner (`training.planning.plan`) and `exporters.runtime.controller_step` are synchronous. They
run in a thread, and each component call they make is handed back to the event loop with
`asyncio.run_coroutine_threadsafe(engine.run(...), loop).result()`, so their calls meet other
requests' calls in the same batches, at the bridge's priority. When the request that started the
work goes away, `run` cancels the pending engine calls and the thread stops at its next call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import numpy as np

from service.inference.engine import Engine
from service.inference.queue import Priority

T = TypeVar("T")


class WorkCancelled(Exception):
    """The request that started the work is gone; raised inside the worker thread."""


class EngineBridge:
    """A worker thread's way into the engine, with the seconds spent in each component."""

    def __init__(
        self, engine: Engine, loop: asyncio.AbstractEventLoop, priority: Priority, deadline: float | None
    ) -> None:
        self.engine, self.loop, self.priority = engine, loop, priority
        self.deadline = deadline  # hard deadline of every engine call (absolute monotonic)
        self.timings: dict[str, float] = {}
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._lock = threading.Lock()
        self._cancelled = False

    def call(self, component: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One engine call from the worker thread (blocks it until the batch ran)."""
        with self._lock:
            if self._cancelled:
                raise WorkCancelled()
            future = asyncio.run_coroutine_threadsafe(
                self.engine.run(component, inputs, self.priority, self.deadline), self.loop
            )
            self._pending.add(future)
        t0 = time.perf_counter()
        try:
            return future.result()
        except concurrent.futures.CancelledError as err:
            raise WorkCancelled() from err
        finally:
            self.timings[component] = self.timings.get(component, 0.0) + time.perf_counter() - t0
            with self._lock:
                self._pending.discard(future)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            for future in self._pending:
                future.cancel()

    async def run(self, work: Callable[[], T], executor: Executor | None = None) -> T:
        """`work()` in a worker thread (`executor`, else the loop's default); cancelling the awaiting
        task cancels the work's engine calls."""
        try:
            return await self.loop.run_in_executor(executor, work)
        except asyncio.CancelledError:
            self.cancel()  # the thread stops at its next engine call
            raise
