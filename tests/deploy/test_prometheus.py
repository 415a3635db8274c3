"""deploy/prometheus: `promtool check config` and `check rules` (Debian's prometheus package, installed by
`make test`), and, always, every alert reading only metrics the service exports (service/metrics.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.promql import PROMETHEUS_SERIES, exported_names, metric_names

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
NO_PROMTOOL = "promtool not installed (apt-get install prometheus; `make test` does as root): only the PromQL checks ran"


def alerts() -> list[dict]:
    groups = yaml.safe_load((PROM / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-k8s.yml"])
def test_promtool_accepts_the_scrape_configs(config: str) -> None:
    done = subprocess.run([PROMTOOL, "check", "config", str(PROM / config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_accepts_the_rules_and_refuses_a_broken_one(tmp_path: Path) -> None:
    done = subprocess.run([PROMTOOL, "check", "rules", str(PROM / "alerts.yml")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in done.stdout
    broken = tmp_path / "broken.yml"
    broken.write_text((PROM / "alerts.yml").read_text().replace("> 0.1", "> > 0.1", 1))
    assert subprocess.run([PROMTOOL, "check", "rules", str(broken)], capture_output=True).returncode != 0


def test_alerts_read_only_exported_metrics() -> None:
    exported = exported_names() | PROMETHEUS_SERIES
    for rule in alerts():
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']} reads no metric: {rule['expr']}"
        assert names <= exported, f"{rule['alert']} reads {sorted(names - exported)}, not exported by the service"


def test_alerts_cover_saturation_errors_and_p99() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in alerts()}
    assert any('reason="queue_full"' in e for e in exprs.values())  # queue saturation
    assert any('status=~"5.."' in e for e in exprs.values())  # error rate
    assert any("histogram_quantile(0.99" in e.replace(" ", "").replace("\n", "") for e in exprs.values())  # p99
    assert all(rule.get("for") and rule["labels"].get("severity") for rule in alerts())


def test_scrape_targets_match_the_ports_the_service_listens_on() -> None:
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    ports = {job["job_name"]: job["dns_sd_configs"][0]["port"] for job in config["scrape_configs"]}
    from service.settings import Settings

    defaults = Settings()
    assert ports == {"lawm-api": defaults.port, "lawm-worker": defaults.worker_port}
    assert config["rule_files"] == ["alerts.yml"]


def test_the_promql_reader_finds_metric_names() -> None:  # the checker itself must be able to fail
    assert metric_names('sum by (le) (rate(lawm_x_bucket{a="b"}[5m])) / ignoring(le) clamp_min(foo, 1e-9)') == {
        "lawm_x_bucket", "foo"}
    assert "lawm_requests_total" in exported_names() and "lawm_request_duration_seconds_bucket" in exported_names()
    assert "lawm_requests" not in exported_names()  # a counter is read as _total
