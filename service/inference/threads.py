"""Worker threads that yield the CPU to the event loop.

On a small machine the model, the decoder and the planner can keep every core busy. The event loop
then waits its turn behind them, and what it alone answers (429s at the door, `/livez`, the first
bytes of an upload) is as slow as the work it is meant to shed. Linux keeps a nice value per thread,
and a thread inherits its creator's: CPU work runs in threads made `nicer` than the event loop's, and
the thread pools that libraries start from those threads (onnxruntime's intra-op pool) inherit it.
Elsewhere (macOS, Windows) this is a no-op.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

log = logging.getLogger("lawm.service")
T = TypeVar("T")


def make_this_thread_nicer(nice: int) -> None:
    """Raise the calling thread's nice value by `nice` (Linux; elsewhere nothing)."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + nice))
    except OSError as e:  # a sandbox may forbid it; serving works the same, only less fairly
        log.debug("could not lower thread %d's priority: %s", tid, e)


def worker_pool(max_workers: int, prefix: str, nice: int) -> ThreadPoolExecutor:
    """A thread pool whose threads run `nice` steps below the thread that made it."""
    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=prefix,
                              initializer=make_this_thread_nicer, initargs=(nice,))


def run_nicer(fn: Callable[[], T], nice: int, name: str) -> T:
    """Run `fn` in a fresh thread `nice` steps below this one and wait for it: what `fn` starts
    (e.g. onnxruntime's thread pools, made when a session opens) inherits the lower priority."""
    with worker_pool(1, name, nice) as pool:
        return pool.submit(fn).result()
