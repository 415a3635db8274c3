"""`lawm bench serve --overload`'s arithmetic on synthetic load-generator outcomes: the share of the
excess shed, the share of 429s answered at once, the bars, and the lawm / peer ratios (the sending
itself: tests/integration/service/test_bench_overload.py)."""

from __future__ import annotations

import pytest

from service.bench.loadgen import Outcome
from service.bench.overload import overload_row, overload_verdicts, peer_ratios, plateau_reached
from service.bench.overload_run import OverloadBench, payload
from service.bench.serve import ServeBench

T0 = 1000.0


def outcomes(statuses: list[tuple[int, float, int]]) -> list[Outcome]:
    """(status, latency in s, count) -> outcomes scheduled 10 ms apart from T0."""
    out: list[Outcome] = []
    for status, latency, count in statuses:
        for _ in range(count):
            t = T0 + 0.01 * len(out)
            out.append(Outcome(t, t, t + latency, status))
    return out


def test_excess_shed_and_the_429s_answered_at_once() -> None:
    # 10 s at 2x a saturation of 10/s: 200 sent, excess 100; 100 admitted, 90 quick and 10 slow 429s,
    # plus one of each failure kind (which are not in the excess arithmetic's numerator)
    sent = outcomes([(200, 0.3, 97), (429, 0.05, 90), (429, 0.25, 10), (500, 0.01, 1), (503, 0.01, 1), (-1, 60.0, 1)])
    row = overload_row(sent, T0, rate=20.0, duration_s=10.0, saturation_rps=10.0, multiple=2.0)
    assert (row["sent"], row["ok"], row["shed_429"]) == (200, 97, 100)
    assert row["offered_rps"] == pytest.approx(20.0)
    assert row["excess"] == pytest.approx(100.0)
    assert row["excess_shed"] == pytest.approx(1.0)
    assert row["shed_fast"] == pytest.approx(0.9)
    assert row["excess_shed_fast"] == pytest.approx(0.9)
    assert row["p50_ms"] == pytest.approx(300.0) and row["p99_ms"] == pytest.approx(300.0)
    assert (row["timeouts"], row["server_5xx"], row["connection_errors"], row["other_4xx"]) == (1, 2, 0, 0)


def test_below_saturation_there_is_no_excess_to_shed() -> None:
    row = overload_row(outcomes([(200, 0.1, 80)]), T0, 8.0, 10.0, 10.0, 0.8)
    assert row["excess"] == 0.0
    assert row["excess_shed"] is None and row["excess_shed_fast"] is None and row["shed_fast"] is None


def test_a_429_within_100_ms_counts_as_at_once_and_one_just_after_does_not() -> None:
    row = overload_row(outcomes([(429, 0.099, 3), (429, 0.101, 1)]), T0, 4.0, 1.0, 1e-3, 4000.0)
    assert row["shed_fast"] == pytest.approx(0.75)


def test_a_client_behind_its_schedule_is_told_apart_from_a_slow_429() -> None:
    late = [Outcome(T0, T0 + 0.5, T0 + 0.55, 429), Outcome(T0, T0 + 0.5, T0 + 0.7, 429)]  # sent 500 ms late
    row = overload_row(late, T0, 2.0, 1.0, 1e-3, 2000.0)
    assert row["shed_fast"] == 0.0 and row["shed_fast_from_send"] == pytest.approx(0.5)
    assert row["send_lag_p99_ms"] == pytest.approx(500.0)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        overload_row([], T0, 1.0, 10.0, 0.0, 2.0)


def _row(multiple: float, excess_shed_fast: float | None, p99: float, ok_rps: float, p50: float = 100.0) -> dict:
    return {"multiple": multiple, "excess_shed_fast": excess_shed_fast, "p99_ms": p99, "p50_ms": p50,
            "ok_rps": ok_rps, "timeouts": 0}


def test_bars_all_met() -> None:
    rows = [_row(0.8, None, 400.0, 8.0), _row(2.0, 0.95, 700.0, 9.8), _row(3.0, 0.91, 800.0, 9.6)]
    lines, passed = overload_verdicts(rows, saturation_rps=10.0)
    assert passed
    assert len(lines) == 4 and all(line.endswith("pass") for line in lines)
    assert "x2.00 the p99" in lines[2]  # the worst admitted p99 (3x) over the 0.8x one
    assert "x0.96 the saturation" in lines[3]  # the lowest goodput past saturation


@pytest.mark.parametrize(("rows", "failing"), [
    ([_row(0.8, None, 400.0, 8.0), _row(2.0, 0.89, 700.0, 9.8)], "429 within"),
    ([_row(0.8, None, 400.0, 8.0), _row(2.0, 0.95, 801.0, 9.8)], "admitted p99"),
    ([_row(0.8, None, 400.0, 8.0), _row(2.0, 0.95, 700.0, 9.4)], "answered 200/s"),
    ([_row(0.8, None, 400.0, 8.0), _row(2.0, None, 700.0, 9.8)], "no excess"),
])
def test_each_bar_can_fail_alone(rows: list[dict], failing: str) -> None:
    lines, passed = overload_verdicts(rows, saturation_rps=10.0)
    assert not passed
    assert [line for line in lines if line.endswith("not met")] == [line for line in lines if failing in line]


def test_peer_ratios_lawm_over_peer_with_their_bars() -> None:
    lawm = {"saturation_rps": 30.0, "rows": [_row(0.8, None, 200.0, 24.0, p50=90.0), _row(2.0, 0.9, 500.0, 29.0)]}
    peer = {"saturation_rps": 20.0, "rows": [_row(0.8, None, 300.0, 16.0, p50=100.0), _row(2.0, None, 4000.0, 20.0)]}
    ratios = {r["figure"].split(" ")[0]: r for r in peer_ratios(lawm, peer)}
    assert ratios["throughput"]["ratio"] == pytest.approx(1.5) and ratios["throughput"]["met"] == "pass"
    assert ratios["p50"]["ratio"] == pytest.approx(0.9) and ratios["p50"]["met"] == "pass"
    assert ratios["p99"]["ratio"] == pytest.approx(0.125) and ratios["p99"]["met"] == "pass"
    peer["rows"][1]["p99_ms"] = 1000.0  # lawm's 500 ms is then half the peer's: over the 0.25 bar
    assert {r["figure"].split(" ")[0]: r for r in peer_ratios(lawm, peer)}["p99"]["met"] == "not met"


def test_plateau_is_a_rate_the_server_could_not_keep_up_with() -> None:
    kept_up = {"throughput_rps": 9.5, "sent": 100, "rejected": 0}
    assert not plateau_reached([kept_up], duration_s=10.0)
    assert plateau_reached([kept_up, {"throughput_rps": 12.0, "sent": 200, "rejected": 0}], duration_s=10.0)
    assert plateau_reached([{"throughput_rps": 8.9, "sent": 100, "rejected": 11}], duration_s=10.0)
    # a burst's few 429s well below saturation: the server kept up, the sweep goes on
    assert not plateau_reached([{"throughput_rps": 9.9, "sent": 100, "rejected": 1}], duration_s=10.0)


def test_the_payload_puts_the_bars_and_the_peer_ratios_in_one_verdict() -> None:
    sweep = {"rate_rps": 20.0, "sent": 200, "ok": 150, "throughput_rps": 15.0, "p50_ms": 100.0, "p95_ms": 200.0,
             "p99_ms": 300.0, "rejected": 50, "errors": 0, "timeouts": 0}
    rows = [{**_row(0.8, None, 400.0, 8.0), "server": "lawm"}, {**_row(2.0, 0.95, 700.0, 14.5), "server": "lawm"},
            {**_row(0.8, None, 300.0, 8.0, p50=200.0), "server": "litserve"},
            {**_row(2.0, None, 9000.0, 15.0), "server": "litserve", "timeouts": 3}]
    figures = {"info": {"name": "demo"}, "sweeps": {"lawm": [sweep], "litserve": [{**sweep, "rejected": 0}]},
               "saturation": {"lawm": 15.0, "litserve": 15.0}, "rows": rows, "latents_max_abs_diff": {"litserve": 0.0}}
    ob = OverloadBench(multiples=(2.0,), peer="litserve")
    out = payload(figures, ServeBench(duration_s=10.0), ob, {"server": "litserve"}, "a machine", "1.00 before")
    assert out["all_bars_met"] and out["peer"]["latents_max_abs_diff"] == 0.0
    assert out["peer_ratios"]["p50 at 0.8x saturation (ms)"] == pytest.approx(0.5)
    assert "litserve at 2x: 3 client time-outs, so its p99 is a floor" in out["verdict"]
    assert [t["title"].split(" ")[0] for t in out["tables"]] == ["Saturation", "lawm"]
    assert out["load_average"] == "1.00 before" and out["machine"] == "a machine"


def test_overload_options_are_checked() -> None:
    with pytest.raises(ValueError, match="above 1"):
        OverloadBench(multiples=(0.5,))
    with pytest.raises(ValueError, match="--peer must be one of"):
        OverloadBench(peer="triton")
    assert OverloadBench(multiples=(3.0,), peer="litserve").lawm_multiples() == [0.8, 2.0, 3.0]
