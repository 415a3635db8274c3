"""deploy/k8s: every manifest through `kubernetes-validate` (strict: unknown fields are errors; it ships
the schemas, so this runs offline), plus what the scale-out design needs of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
VERSION = "1.30.0"  # the oldest Kubernetes these manifests are meant for


def documents() -> list[tuple[str, dict[str, Any]]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs += [(name, d) for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def kind(k: str) -> list[dict[str, Any]]:
    return [d for _, d in documents() if d["kind"] == k]


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("version", [VERSION, kubernetes_validate.latest_version()])
def test_manifests_validate_strictly(version: str) -> None:
    for name, doc in documents():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise AssertionError(f"{name} {doc['kind']}/{doc['metadata']['name']}: {e.message}") from e
    assert len(documents()) >= 12


def test_a_misspelled_field_is_refused() -> None:
    [api] = [d for d in kind("Deployment") if d["metadata"]["name"] == "lawm-api"]
    api["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = api["spec"]["template"]["spec"][
        "containers"][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(api, VERSION, strict=True)


def test_deployments_have_probes_resources_gpus_and_drain_time() -> None:
    config = kind("ConfigMap")[0]["data"]
    for deployment in kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert probe in container, (deployment["metadata"]["name"], probe)
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["terminationGracePeriodSeconds"] > float(config["LAWM_DRAIN_TIMEOUT_S"])
        assert container["envFrom"][0]["configMapRef"]["name"] == "lawm-config"
    [worker] = [d for d in kind("Deployment") if d["metadata"]["name"] == "lawm-worker"]
    assert worker["spec"]["template"]["spec"]["containers"][0]["args"] == ["worker"]
    assert config["LAWM_REDIS_URL"] == "redis://lawm-redis:6379/0"
    assert float(config["LAWM_JOB_VISIBILITY_TIMEOUT_S"]) >= 2 * float(config["LAWM_WORKER_HEARTBEAT_S"])


def test_autoscalers_follow_queue_depth() -> None:
    hpas = {h["metadata"]["name"]: h for h in kind("HorizontalPodAutoscaler")}
    assert hpas["lawm-worker"]["spec"]["metrics"][0]["external"]["metric"]["name"] == "lawm_jobs_queued"
    assert hpas["lawm-api"]["spec"]["metrics"][0]["external"]["metric"]["name"] == "lawm_batch_queue_rows"
    rules = yaml.safe_load(kind("ConfigMap")[1]["data"]["config.yaml"])["externalRules"]
    assert {r["name"]["as"] for r in rules} == {"lawm_jobs_queued", "lawm_batch_queue_rows"}
    from tests.deploy.promql import exported_names, metric_names

    for rule in rules:
        assert metric_names(rule["metricsQuery"]) <= exported_names()


def test_redis_keeps_an_aof() -> None:
    [redis] = kind("StatefulSet")
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes" and args[args.index("--appendfsync") + 1] == "always"
    assert redis["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
