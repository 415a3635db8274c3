"""deploy/grafana: the dashboard JSON reads only metrics the service exports, from the provisioned
Prometheus data source, and shows the figures operators need."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.deploy.promql import PROMETHEUS_SERIES, exported_names, metric_names

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"


def dashboard() -> dict:
    return json.loads((GRAFANA / "dashboards" / "lawm.json").read_text())


def test_every_panel_reads_exported_metrics() -> None:
    exported = exported_names() | PROMETHEUS_SERIES
    panels = dashboard()["panels"]
    assert len(panels) >= 8
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names and names <= exported, f"{panel['title']}: {sorted(names - exported)} not exported"


def test_dashboard_covers_the_service() -> None:
    used = {n for p in dashboard()["panels"] for t in p["targets"] for n in metric_names(t["expr"])}
    for needed in ("lawm_requests_total", "lawm_request_duration_seconds_bucket", "lawm_queue_depth",
                   "lawm_batch_size_sum", "lawm_rejections_total", "lawm_jobs", "lawm_queue_duration_seconds_bucket",
                   "lawm_compute_duration_seconds_bucket"):
        assert needed in used, needed


def test_panels_use_the_provisioned_datasource() -> None:
    [source] = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    board = dashboard()
    assert board["uid"] == "lawm"
    assert {p["datasource"]["uid"] for p in board["panels"]} == {source["uid"]}
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "lawm.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"  # where compose mounts dashboards/
