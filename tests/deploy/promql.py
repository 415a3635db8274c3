"""Metric names out of PromQL expressions (enough of PromQL for our alerts and dashboard), and the
names `ServiceMetrics` exports, so tests can say every expression reads a real metric."""

from __future__ import annotations

import re

# PromQL's functions, aggregations and keywords: identifiers that are not metric names.
PROMQL_WORDS = {
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bool", "bottomk", "by", "ceil", "changes",
    "clamp", "clamp_max", "clamp_min", "count", "count_over_time", "count_values", "delta", "deriv", "exp",
    "floor", "group", "group_left", "group_right", "histogram_quantile", "idelta", "ignoring", "increase",
    "irate", "label_join", "label_replace", "last_over_time", "ln", "log2", "log10", "max", "max_over_time",
    "min", "min_over_time", "offset", "on", "predict_linear", "quantile", "quantile_over_time", "rate",
    "resets", "round", "scalar", "sort", "sort_desc", "sqrt", "stddev", "stdvar", "sum", "sum_over_time",
    "time", "timestamp", "topk", "vector", "without", "and", "or", "unless", "inf", "nan",
}
PROMETHEUS_SERIES = {"up"}  # made by Prometheus itself for every target


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors [5m]
    text = re.sub(r"(?<![A-Za-z0-9_:])\d+(?:\.\d*)?(?:[eE][-+]?\d+)?", "", text)  # numbers, 1e-9 too
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text))
    return {n for n in names if n.lower() not in PROMQL_WORDS}


def exported_names() -> set[str]:
    """Every series name the service's registry can export (counters as _total, histograms' parts)."""
    from service.metrics import ServiceMetrics

    names: set[str] = set()
    for family in ServiceMetrics().registry.collect():
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count", "_created")}
        else:
            names.add(family.name)
        names |= {s.name for s in family.samples}
    return names
