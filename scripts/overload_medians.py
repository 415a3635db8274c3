"""Medians of the issue's overload figures over several `lawm bench serve --overload` runs.

  PYTHONPATH=. python scripts/overload_medians.py run1.json run2.json run3.json --json docs/benchmarks/serve-overload-runs.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def figures(payload: dict[str, Any]) -> dict[str, float | None]:
    rows = {(r["server"], r["multiple"]): r for r in payload["rows"]}
    lawm = {m: r for (s, m), r in rows.items() if s == "lawm"}
    sat = payload["saturation_rps"]["lawm"]
    peer = {r["figure"].split(" ")[0]: r["ratio"] for t in payload.get("tables", []) if t["title"].startswith("lawm /")
            for r in t["rows"]}
    return {
        "excess_shed_fast_2x": lawm[2.0]["excess_shed_fast"],
        "excess_shed_fast_3x": lawm[3.0]["excess_shed_fast"],
        "admitted_p99_3x_over_p99_0.8x": lawm[3.0]["p99_ms"] / lawm[0.8]["p99_ms"],
        "ok_rps_3x_over_saturation": lawm[3.0]["ok_rps"] / sat,
        "peer_throughput": peer.get("throughput"),
        "peer_p50_0.8x": peer.get("p50"),
        "peer_p99_2x": peer.get("p99"),
        "saturation_rps": sat,
        "loadavg_1m": payload.get("load_average"),
    }


BARS = {"excess_shed_fast_2x": (">=", 0.9), "excess_shed_fast_3x": (">=", 0.9),
        "admitted_p99_3x_over_p99_0.8x": ("<=", 2.0), "ok_rps_3x_over_saturation": (">=", 0.95),
        "peer_throughput": (">=", 1.0), "peer_p50_0.8x": ("<=", 1.0), "peer_p99_2x": ("<=", 0.25)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    per_run = [{"run": i + 1, **figures(json.loads(p.read_text()))} for i, p in enumerate(args.runs)]
    rows = []
    for key, (op, bar) in BARS.items():
        values = [r[key] for r in per_run if r[key] is not None]
        median = statistics.median(values)
        met = median >= bar if op == ">=" else median <= bar
        rows.append({"figure": key, **{f"run {r['run']}": r[key] for r in per_run}, "median": median,
                     "bar": f"{op} {bar:g}", "met": "pass" if met else "not met"})
    first = json.loads(args.runs[0].read_text())
    payload = {
        "benchmark": "serve-overload-runs",
        "title": f"Serving past saturation: the issue's figures over {len(per_run)} runs of the overload bench, medians",
        "machine": first.get("machine"),
        "command": first.get("command"),
        "statistic": "each run is one `lawm bench serve --overload 2,3 --peer litserve`, back to back on the same "
        "machine (run 1 is serve-overload.json, with every row); the load averages of the runs: "
        + "; ".join(str(r["loadavg_1m"]) for r in per_run),
        "verdict": "; ".join(f"{r['figure']} median {r['median']:.3g} ({r['bar']}): {r['met']}" for r in rows),
        "rows": rows,
    }
    args.json.write_text(json.dumps(payload, indent=1) + "\n")
    print(payload["verdict"])


if __name__ == "__main__":
    main()
