"""deploy/: the Kubernetes manifests pass the Kubernetes schemas (kubernetes-validate, pinned version),
the compose file passes the compose-spec schema (the copy vendored by check-jsonschema), and both say
what deploy/README.md promises: one flusher per spool, /readyz probes, a grace period that covers the
drain, the cluster the migrations are rendered for. No container runs here: no Docker engine, no
Kubernetes API server (the Altinity operator's custom resources are checked for shape only:
kubernetes-validate ships the built-in kinds' schemas, not those of custom resources)."""

from __future__ import annotations

import copy
import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import ValidationError

from clickstream.cli import main
from clickstream.core.settings import Settings
from flusher.loop import Flusher

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
#: The Kubernetes version the manifests are written for: native sidecars (restartPolicy: Always in
#: initContainers) are on by default from 1.29 and GA in 1.33; `sleep` preStop hooks from 1.30.
K8S_VERSION = "1.33.0"
CUSTOM_KINDS = {"ClickHouseInstallation", "ClickHouseKeeperInstallation"}


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def find(kind: str, name: str) -> dict[str, Any]:
    return next(doc for _, doc in k8s_documents() if doc["kind"] == kind and doc["metadata"]["name"] == name)


def test_every_builtin_manifest_passes_the_kubernetes_schema() -> None:
    checked = 0
    for file, doc in k8s_documents():
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except ValidationError as exc:
            raise AssertionError(f"{file} {doc['kind']} {doc['metadata']['name']}: {exc}") from exc
        checked += 1
    assert checked >= 9
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in (DEPLOY / "k8s").glob("*.yaml")
                                                        if p.name != "kustomization.yaml")


def test_the_validator_catches_a_broken_manifest() -> None:
    broken = copy.deepcopy(find("StatefulSet", "collector"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = {"name": "http"}
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    unknown = copy.deepcopy(find("StatefulSet", "collector"))
    unknown["spec"]["drainSeconds"] = 5
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(unknown, K8S_VERSION, strict=True)


def test_collector_pod_keeps_its_spool_and_drains_it_on_stop() -> None:
    sts = find("StatefulSet", "collector")
    pod = sts["spec"]["template"]["spec"]
    (collector,) = pod["containers"]
    (flusher,) = pod["initContainers"]
    assert collector["args"] == ["collector"] and flusher["args"] == ["flusher"]
    assert flusher["restartPolicy"] == "Always"  # a native sidecar: stopped after the collector
    assert flusher["volumeMounts"] == [{"name": "spool", "mountPath": "/data"}]
    assert collector["volumeMounts"][0] == flusher["volumeMounts"][0]
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["spool"]
    assert collector["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "readinessProbe" not in flusher  # a ClickHouse outage must not take collectors out of service
    # the grace period covers preStop, the collector's graceful stop (uvicorn, 30 s) and the drain
    drain_s = inspect.signature(Flusher.stop).parameters["drain_timeout_s"].default
    pre_stop_s = collector["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop_s + 30 + drain_s
    hpa = find("HorizontalPodAutoscaler", "collector")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "collector"}
    assert hpa["spec"]["metrics"][0]["containerResource"]["name"] == "cpu"
    pdb = find("PodDisruptionBudget", "collector")
    assert pdb["spec"]["selector"] == sts["spec"]["selector"]


def test_clickhouse_cluster_reference_is_two_shards_of_two_replicas_with_keeper() -> None:
    docs = {doc["kind"]: doc for _, doc in k8s_documents() if doc["kind"] in CUSTOM_KINDS}
    chi = docs["ClickHouseInstallation"]["spec"]["configuration"]
    (cluster,) = chi["clusters"]
    config = find("ConfigMap", "clickstream")["data"]
    assert cluster["name"] == config["CLICKSTREAM_CLICKHOUSE_CLUSTER"] == "clickstream"
    assert cluster["layout"] == {"shardsCount": 2, "replicasCount": 2}
    assert chi["profiles"]["writer/distributed_foreground_insert"] == 1
    assert chi["profiles"]["dashboards/readonly"] == 2
    keeper = docs["ClickHouseKeeperInstallation"]["spec"]["configuration"]["clusters"][0]
    assert keeper["layout"]["replicasCount"] == 3


def test_compose_file_passes_the_compose_spec_schema(tmp_path: Path) -> None:
    tool = [sys.executable, "-m", "check_jsonschema"]
    ok = subprocess.run([*tool, "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    broken["services"]["collector-1"]["healthcheck"] = {"test": ["CMD", "true"], "interval": 5}  # not a duration
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
    bad = subprocess.run([*tool, "--builtin-schema", "vendor.compose-spec", str(tmp_path / "compose.yaml")],
                         capture_output=True, text=True)
    assert bad.returncode == 1


def test_compose_pairs_each_collector_with_one_flusher_on_its_spool() -> None:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    for i in (1, 2):
        collector, flusher = services[f"collector-{i}"], services[f"flusher-{i}"]
        assert collector["command"] == ["collector"] and flusher["command"] == ["flusher"]
        assert collector["volumes"] == [f"spool-{i}:/data", "salts:/salts"]
        assert flusher["volumes"] == [f"spool-{i}:/data"]
        assert "/readyz" in " ".join(collector["healthcheck"]["test"])
    assert services["migrate"]["command"] == ["migrate", "--cluster", "clickstream"]
    assert services["flusher-1"]["environment"]["CLICKSTREAM_CLICKHOUSE_CLUSTER"] == "clickstream"
    images = [s["image"] for s in services.values() if "image" in s]
    assert all(":" in image and not image.endswith(":latest") for image in images)
    # every clickstream command the files run exists, and every CLICKSTREAM_ variable is a setting
    commands = {s["command"][0] for s in services.values() if s.get("command")}
    assert commands <= set(main.commands)
    variables = {v for s in services.values() for v in (s.get("environment") or {}) if v.startswith("CLICKSTREAM_")}
    variables |= set(find("ConfigMap", "clickstream")["data"])
    settings = {"CLICKSTREAM_" + name.upper() for name in Settings.model_fields}
    query_port = {"CLICKSTREAM_SQL_HOST", "CLICKSTREAM_SQL_PORT", "CLICKSTREAM_SQL_PASSWORD"}  # serve's query port
    assert variables - query_port <= settings


def test_image_installs_the_package_not_editable() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "pip wheel" in dockerfile and "pip install --no-cache-dir /wheels/*.whl" in dockerfile
    assert " -e " not in dockerfile and "--editable" not in dockerfile
