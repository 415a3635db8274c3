"""Overload rows of `lawm bench serve --overload`: what a server does with load past its saturation.

Pure arithmetic on the load generator's outcomes (no sending here; `overload_run` sends). Past
saturation a server that sheds well answers the *excess* (offered minus what it can serve) with a
quick 429 and keeps serving the rest at the latency it had below saturation; one that does not shed
queues everything and its latency grows with the run's length. The figures per rate:

- offered and answered-200 rates, and the excess = requests sent - saturation rate x duration;
- `excess_shed`: 429s / excess; `shed_fast`: the share of the 429s answered within 100 ms (from the
  request's *scheduled* send time, as every latency here); `excess_shed_fast`: quick 429s / excess;
  `shed_fast_from_send`: the same share timed from when the client actually sent it (on a shared host
  the load generator itself can fall behind its schedule: `send_lag_p99_ms` says by how much);
- p50/p99 of the admitted (200) requests, client time-outs, 5xx answers, connection errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.bench.loadgen import Outcome, percentile_ms, summarize

FAST_S = 0.100  # a 429 answered within this counts as "at once"
# The bars
SHED_BAR = 0.90  # at 2x and 3x saturation: >= 90% of the excess answered 429 within FAST_S
P99_BAR = 2.0  # admitted p99 past saturation <= 2x the p99 at 0.8x saturation
GOODPUT_BAR = 0.95  # answered 200/s past saturation >= 0.95x the saturation throughput
BASELINE = 0.8  # the multiple of saturation the latency bar compares against
# LitServe peer bars (lawm / peer)
PEER_THROUGHPUT_BAR = 1.0  # saturation throughput ratio >= 1
PEER_P50_BAR = 1.0  # p50 at 0.8x saturation ratio <= 1
PEER_P99_BAR = 0.25  # p99 at 2x saturation ratio <= 0.25


def overload_row(outcomes: Sequence[Outcome], start: float, rate: float, duration_s: float,
                 saturation_rps: float, multiple: float, server: str = "lawm") -> dict[str, Any]:
    """One rate's figures (see the module docstring); `multiple` is `rate` / saturation, for the table."""
    if duration_s <= 0 or saturation_rps <= 0:
        raise ValueError(f"duration and saturation must be positive (got {duration_s}, {saturation_rps})")
    base = summarize(list(outcomes), start, rate)
    shed = [o for o in outcomes if o.status == 429]
    fast = sum(o.done - o.scheduled <= FAST_S for o in shed)
    excess = len(outcomes) - saturation_rps * duration_s
    has_excess = excess > 0
    return {
        "server": server,
        "multiple": multiple,
        "rate_rps": rate,
        "offered_rps": len(outcomes) / duration_s,
        "sent": len(outcomes),
        "ok": base["ok"],
        "ok_rps": base["throughput_rps"],  # answered 200 / (first send to last answer), as the sweep's
        "shed_429": len(shed),
        "excess": excess if has_excess else 0.0,
        "excess_shed": len(shed) / excess if has_excess else None,
        "shed_fast": fast / len(shed) if shed else None,
        "excess_shed_fast": fast / excess if has_excess else None,
        "shed_fast_from_send": sum(o.done - o.sent <= FAST_S for o in shed) / len(shed) if shed else None,
        "shed_p99_ms": percentile_ms([o.done - o.scheduled for o in shed], 99),
        "p50_ms": base["p50_ms"],
        "p99_ms": base["p99_ms"],
        "timeouts": base["timeouts"],
        "server_5xx": sum(500 <= o.status < 600 for o in outcomes),
        "connection_errors": sum(o.status == 0 for o in outcomes),
        "other_4xx": sum(400 <= o.status < 500 and o.status != 429 for o in outcomes),
        "send_lag_p99_ms": base["send_lag_p99_ms"],
    }


def _met(ok: bool) -> str:
    return "pass" if ok else "not met"


def overload_verdicts(rows: Sequence[dict[str, Any]], saturation_rps: float) -> tuple[list[str], bool]:
    """The issue's three bars on one server's overload rows: (one line each, all passed)."""
    base = next((r for r in rows if r["multiple"] == BASELINE), None)
    over = [r for r in rows if r["multiple"] >= 2]
    lines, passed = [], True
    for r in over:
        shed = r["excess_shed_fast"]
        ok = shed is not None and shed >= SHED_BAR
        passed &= ok
        text = "no excess" if shed is None else f"{shed:.0%}"
        lines.append(f"{r['multiple']:g}x saturation: {text} of the excess answered 429 within "
                     f"{FAST_S * 1000:.0f} ms (bar >= {SHED_BAR:.0%}): {_met(ok)}")
    if base is not None and base["p99_ms"] is not None:
        worst = [r for r in over if r["p99_ms"] is not None]
        if worst:
            top = max(worst, key=lambda r: r["p99_ms"])
            ratio = top["p99_ms"] / base["p99_ms"]
            ok = ratio <= P99_BAR
            passed &= ok
            lines.append(f"admitted p99 {top['p99_ms']:.0f} ms at {top['multiple']:g}x = x{ratio:.2f} the p99 at "
                         f"{BASELINE:g}x ({base['p99_ms']:.0f} ms) (bar <= x{P99_BAR:g}): {_met(ok)}")
    if over:
        low = min(over, key=lambda r: r["ok_rps"])
        ratio = low["ok_rps"] / saturation_rps
        ok = ratio >= GOODPUT_BAR
        passed &= ok
        lines.append(f"answered 200/s at {low['multiple']:g}x = x{ratio:.2f} the saturation throughput "
                     f"({saturation_rps:.1f}/s) (bar >= x{GOODPUT_BAR:g}): {_met(ok)}")
    return lines, passed


def peer_ratios(lawm: dict[str, Any], peer: dict[str, Any]) -> list[dict[str, Any]]:
    """lawm / peer on the three figures the issue compares, each with its bar. `lawm` and `peer` are
    {"saturation_rps": .., "rows": overload rows} (each server's rows at multiples of its own saturation)."""

    def at(side: dict[str, Any], multiple: float, key: str) -> float | None:
        row = next((r for r in side["rows"] if r["multiple"] == multiple), None)
        return None if row is None else row[key]

    figures = [
        ("throughput at saturation (200/s)", lawm["saturation_rps"], peer["saturation_rps"], ">=", PEER_THROUGHPUT_BAR),
        (f"p50 at {BASELINE:g}x saturation (ms)", at(lawm, BASELINE, "p50_ms"), at(peer, BASELINE, "p50_ms"),
         "<=", PEER_P50_BAR),
        ("p99 of 200s at 2x saturation (ms)", at(lawm, 2.0, "p99_ms"), at(peer, 2.0, "p99_ms"), "<=", PEER_P99_BAR),
    ]
    out = []
    for name, mine, theirs, op, bar in figures:
        ratio = mine / theirs if mine is not None and theirs else None
        met = None if ratio is None else (ratio >= bar if op == ">=" else ratio <= bar)
        out.append({"figure": name, "lawm": mine, "litserve": theirs, "ratio": ratio, "bar": f"{op} {bar:g}",
                    "met": None if met is None else _met(met)})
    return out


def plateau_reached(rows: Sequence[dict[str, Any]], duration_s: float, keep_up: float = 0.9) -> bool:
    """Whether some rate was past saturation: the server answered < `keep_up` of the offered rate in
    200s (else the sweep's best throughput is a floor, not the saturation). A few 429s alone do not
    count: a server that sheds at a tight wait budget refuses some of a Poisson burst well below its
    saturation, and stopping the sweep there would understate what it can serve."""
    return any(r["throughput_rps"] < keep_up * r["sent"] / duration_s for r in rows)
