"""`lawm bench serve`'s load generator and process helpers against real processes: an open-loop run
against uvicorn serving a tiny app with a real batcher (loadgen_app.py), and a server that exits."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.bench.loadgen import RequestSpec, client_for, poisson_schedule, run_rate
from service.bench.processes import ServerError, ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "tests.integration.service.loadgen_app:app", "--port", str(port),
               "--log-level", "warning"]
    server = ServerProcess(command, port, tmp_path_factory.mktemp("server") / "log.txt", ready_path="/livez")
    server.env = {"PYTHONPATH": str(ROOT)}
    with server:
        yield server


def test_open_loop_run_against_a_real_server(tiny_server: ServerProcess) -> None:
    rate, duration = 40.0, 1.5
    expected = len(poisson_schedule(rate, duration, seed=7))

    async def go() -> dict:
        async with client_for(tiny_server.url) as client:
            return await run_rate(client, RequestSpec("POST", "/v1/double", b"abc"), rate, duration, seed=7)

    cpu_before = tiny_server.cpu_seconds()
    row = asyncio.run(go())
    assert tiny_server.cpu_seconds() > cpu_before > 0  # the server's own CPU time, read from /proc
    assert row["sent"] == expected
    assert row["rejected_by_status"]["429"] == expected // 4  # every 4th request, exactly
    assert row["ok"] == expected - expected // 4 and row["errors"] == 0 and row["timeouts"] == 0
    assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    assert row["server_timing_ms"] == {"total_s": pytest.approx(1.0)}
    figures = row["components"]["doubler"]  # the server's batcher, read from its /metrics
    assert figures["batches"] >= 1 and figures["mean_batch"] * figures["batches"] == pytest.approx(row["ok"])


def test_server_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import sys; print('cannot start: no model'); sys.exit(3)"]
    with pytest.raises(ServerError, match=r"exited with 3:\ncannot start: no model"):
        ServerProcess(command, free_port(), tmp_path / "log.txt").start(timeout_s=30)
