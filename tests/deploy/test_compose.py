"""deploy/docker-compose*.yml: through `docker-compose config` (Debian's docker-compose, installed by
`make test`) and, always, against the Compose Specification's JSON schema vendored beside this test
(tests/deploy/compose_spec.json, from docker-compose 1.29.2, Apache-2.0). No container is started."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
GPU = ROOT / "deploy" / "docker-compose.gpu.yml"
DOCKER_COMPOSE = shutil.which("docker-compose")


def validator() -> jsonschema.Draft201909Validator:
    return jsonschema.Draft201909Validator(json.loads((Path(__file__).parent / "compose_spec.json").read_text()))


@pytest.mark.skipif(DOCKER_COMPOSE is None, reason="docker-compose not installed (apt-get install docker-compose); "
                                                   "the schema check below still ran")
def test_docker_compose_config_accepts_both_files() -> None:
    for files in ([COMPOSE], [COMPOSE, GPU]):
        args = [DOCKER_COMPOSE, *(a for f in files for a in ("-f", str(f))), "config"]
        done = subprocess.run(args, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        merged = yaml.safe_load(done.stdout)
        assert set(merged["services"]) == {"api", "worker", "redis", "prometheus", "grafana"}
        if GPU in files:
            assert merged["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"


def test_compose_files_match_the_schema() -> None:
    for path in (COMPOSE, GPU):
        errors = [e.message for e in validator().iter_errors(yaml.safe_load(path.read_text()))]
        assert errors == [], f"{path.name}: {errors}"
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["redis"]["healthcheck"]["intervall"] = "5s"  # a typo the schema must catch
    assert list(validator().iter_errors(broken))


def test_the_stack_is_wired_for_scale_out() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes" and redis[redis.index("--appendfsync") + 1] == "always"
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert env["LAWM_REDIS_URL"] == "redis://redis:6379/0"
        assert "results:/app/results" in services[name]["volumes"]  # the shared volume for large renders
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["worker"]["command"] == ["worker"] and services["worker"]["environment"]["LAWM_HEALTH_PORT"] == "8001"
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
