"""The open-loop load generator: its Poisson schedule, its statistics and its reading of /metrics (a
run against a real server process: tests/integration/service/test_loadgen_server.py)."""

from __future__ import annotations

import numpy as np
import pytest

from service.bench.loadgen import Outcome, batching_figures, parse_metrics, poisson_schedule, summarize
from service.bench.serve import _flat, at_p99_target, saturation
from service.metrics import ServiceMetrics


@pytest.mark.parametrize(("rate", "duration"), [(5.0, 20.0), (50.0, 10.0), (400.0, 5.0)])
def test_poisson_schedule_has_the_rate_and_exponential_gaps(rate: float, duration: float) -> None:
    times = poisson_schedule(rate, duration, seed=3)
    assert np.all(np.diff(times) > 0) and times[0] >= 0 and times[-1] < duration
    n = rate * duration
    assert abs(len(times) - n) < 4 * np.sqrt(n)  # Poisson count: mean n, sd sqrt(n)
    gaps = np.diff(times)
    assert abs(np.std(gaps) / np.mean(gaps) - 1.0) < 0.35  # exponential: coefficient of variation 1
    np.testing.assert_array_equal(times, poisson_schedule(rate, duration, seed=3))  # seeded
    assert not np.array_equal(times[:5], poisson_schedule(rate, duration, seed=4)[:5])


def test_poisson_schedule_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        poisson_schedule(0.0, 10.0)


def test_summary_counts_latency_from_the_schedule_and_sorts_statuses() -> None:
    start = 100.0
    outcomes = [Outcome(start + i, start + i + 0.5, start + i + (i + 1) * 0.1, 200) for i in range(10)]
    outcomes += [Outcome(start, start, start + 0.01, 429), Outcome(start, start, start + 0.01, 504),
                 Outcome(start, start, start + 0.01, 500), Outcome(start, start, start + 60, -1)]
    row = summarize(outcomes, start, rate=2.0)
    assert (row["sent"], row["ok"], row["rejected"], row["timeouts"], row["errors"]) == (14, 10, 2, 1, 2)
    assert row["rejected_by_status"] == {"429": 1, "503": 0, "504": 1}
    assert row["p50_ms"] == pytest.approx(550.0)  # latencies 0.1..1.0 s, measured from the scheduled time
    assert row["p99_ms"] == pytest.approx(991.0)
    assert row["throughput_rps"] == pytest.approx(10 / 60.0)  # first send to last answer (the timeout)
    assert row["send_lag_p99_ms"] == pytest.approx(500.0)


def test_batching_figures_come_from_real_metric_deltas() -> None:
    metrics = ServiceMetrics()
    enc = metrics.batcher("encoder")
    enc.observe_batch(4, 0.2)
    before = parse_metrics(metrics.render()[0].decode())
    for rows, seconds in [(8, 0.5), (4, 0.3)]:
        enc.observe_batch(rows, seconds)
    for seconds in (0.01, 0.03):
        enc.observe_queue(seconds)
    after = parse_metrics(metrics.render()[0].decode())
    figures = batching_figures(before, after, elapsed_s=2.0)
    assert list(figures) == ["encoder"]
    f = figures["encoder"]
    assert f["batches"] == 2 and f["mean_batch"] == pytest.approx(6.0)
    assert f["queue_ms"] == pytest.approx(20.0) and f["compute_ms"] == pytest.approx(400.0)
    assert f["busy"] == pytest.approx(0.4)


def _row(rate: float, throughput: float, p99: float | None, rejected: int = 0, errors: int = 0) -> dict:
    return {"rate_rps": rate, "sent": 10, "ok": 10 - rejected - errors, "throughput_rps": throughput, "p50_ms": p99,
            "p95_ms": p99, "p99_ms": p99, "rejected": rejected, "errors": errors, "timeouts": 0,
            "components": {"encoder": {"batches": 4.0, "mean_batch": 6.0, "queue_ms": 3.0, "compute_ms": 20.0,
                                       "busy": 0.9},
                           "idm": {"batches": 4.0, "mean_batch": 5.0, "queue_ms": 1.0, "compute_ms": 10.0,
                                   "busy": 0.4}}}


def test_saturation_and_the_p99_target_pick_the_right_rates() -> None:
    rows = [_row(1, 1.0, 50.0), _row(2, 2.0, 90.0), _row(4, 3.5, 400.0), _row(8, 3.2, 900.0, rejected=3)]
    assert saturation(rows)["rate_rps"] == 4
    assert at_p99_target(rows, 100.0)["rate_rps"] == 2
    assert at_p99_target(rows, 1000.0)["rate_rps"] == 4  # 8/s met the latency but rejected requests
    assert at_p99_target(rows, 10.0) is None


def test_table_row_shows_the_busiest_component_and_sums_queue_and_compute() -> None:
    flat = _flat(_row(4, 3.5, 400.0), "batching<=32")
    assert flat["mean_batch"] == 6.0 and flat["busy"] == 0.9
    assert flat["queue_ms"] == 4.0 and flat["compute_ms"] == 30.0


def test_bench_serve_payload_renders_its_tables_in_the_docs() -> None:
    from training.reports import render_section

    payload = {"title": "Serving", "machine": "m", "verdict": "batching x2.5 (bar: >= 2): pass",
               "rows": [_flat(_row(4, 3.5, 400.0), "batching<=32")],
               "tables": [{"title": "At saturation", "rows": [{"server": "batching<=32", "saturation_rps": 3.5}]}]}
    text = render_section("serve", payload)
    assert "### At saturation" in text and "| batching<=32 | 3.5 |" in text and "x2.5" in text
