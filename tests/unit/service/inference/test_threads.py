"""Worker threads run nicer than the thread that made them, and so do the threads they start."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from service.inference.threads import run_nicer, worker_pool

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")


def own_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_worker_pool_threads_run_nicer_than_their_creator() -> None:
    base = own_nice()
    with worker_pool(2, "test", 3) as pool:
        values = {pool.submit(own_nice).result() for _ in range(4)}
    assert values == {min(19, base + 3)}
    assert own_nice() == base  # the caller's own priority is untouched


def test_threads_started_by_a_nicer_thread_inherit_its_priority() -> None:
    """What onnxruntime relies on: its pools are made by the thread that opens the session."""
    base = own_nice()

    def start_a_thread() -> int:
        seen: list[int] = []
        t = threading.Thread(target=lambda: seen.append(own_nice()))
        t.start()
        t.join()
        return seen[0]

    assert run_nicer(start_a_thread, 2, "opener") == min(19, base + 2)


def test_nice_zero_changes_nothing() -> None:
    base = own_nice()
    with worker_pool(1, "test", 0) as pool:
        assert pool.submit(own_nice).result() == base
