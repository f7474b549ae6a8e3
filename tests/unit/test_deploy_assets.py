"""Everything in deploy/ is parsed and checked without a cluster or a Docker engine: the
Kubernetes manifests against the schemas of a pinned Kubernetes version
(kubernetes-validate ships them, no network), the runtime's own settings in the ConfigMap
and Secret, the Deployment's promises (probes, a grace period that covers the drain,
non-root, read-only root), the compose file's references, the collector's pipelines and
the JSON files. The Prometheus files are checked by promtool in
tests/integration/test_prometheus.py."""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from runtime.config.registry import load_registry
from runtime.config.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.31.0"  # the oldest minor still in upstream support when pinned
WATCHDOG_S = 10  # SIGTERM ends the process shutdown_grace_s + 10 s later at the latest


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        out.extend((path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return out


def _one(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in _manifests() if doc["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


def test_k8s_manifests_validate_against_the_pinned_kubernetes_schemas() -> None:
    validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (pip: dev extra)"
    )
    checked = set()
    for name, doc in _manifests():
        if "." in doc["apiVersion"].split("/")[0] and not doc["apiVersion"].startswith(
            ("apps/", "policy/", "batch/", "autoscaling/", "networking.k8s.io/")
        ):
            continue  # a custom resource (keda.sh): no schema in Kubernetes itself
        validate.validate(doc, KUBERNETES_VERSION, strict=True)
        checked.add(doc["kind"])
        assert doc["metadata"].get("namespace", "runtime") == "runtime", name
    assert {"Namespace", "Deployment", "Service", "Secret", "ConfigMap"} <= checked
    assert "PodDisruptionBudget" in checked


def test_strict_validation_would_catch_a_misspelt_field() -> None:
    validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate missing")
    service = _one("Service")
    broken = {**service, "spec": {**service["spec"], "selectr": {"a": "b"}}}
    with pytest.raises(validate.ValidationError):
        validate.validate(broken, KUBERNETES_VERSION, strict=True)


def _settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The Settings a pod gets: the ConfigMap's settings.toml and the Secret's variables."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "settings.toml").write_text(_one("ConfigMap")["data"]["settings.toml"])
    monkeypatch.chdir(tmp_path)  # no stray .secrets.toml
    for key in list(os.environ):
        if key.startswith("RUNTIME_"):
            monkeypatch.delenv(key)
    for key, value in _one("Secret")["stringData"].items():
        monkeypatch.setenv(key, value)
    return load_settings(config_dir=config)


def test_the_configmap_and_secret_are_settings_the_runtime_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path, monkeypatch)  # strict: an unknown key fails here
    assert settings.http.host == "0.0.0.0" and settings.http.port == 8080
    assert settings.http.token and settings.deploy.signing_key and settings.redis.url
    env = _one("Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "RUNTIME_CONFIG_DIR", "value": "/etc/runtime"} in env


def test_the_grace_period_covers_the_longest_handler_and_the_drain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path, monkeypatch)
    longest_s = max(spec.options.timeout_s for spec in load_registry(ROOT / "functions"))
    assert settings.worker.shutdown_grace_s >= longest_s
    pod = _one("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pre_stop_s = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    needed_s = pre_stop_s + settings.worker.shutdown_grace_s + WATCHDOG_S
    assert pod["terminationGracePeriodSeconds"] >= needed_s


def test_the_deployment_keeps_its_promises() -> None:
    deployment = _one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    # Where the runtime writes is a volume: deploy.dir and the temporary files.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(mounts.values()) <= set(volumes)
    config = tomllib.loads(_one("ConfigMap")["data"]["settings.toml"])
    for path in (config["deploy"]["dir"], "/tmp"):
        parent = max((m for m in mounts if path.startswith(m)), key=len)
        assert "emptyDir" in volumes[mounts[parent]], path
    # Deploy mode, which the Secret's signing key is for: --functions would force local mode.
    assert container["args"] == ["serve"]
    secret_refs = {ref["secretRef"]["name"] for ref in container["envFrom"]}
    assert secret_refs == {_one("Secret")["metadata"]["name"]}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert _one("Service")["spec"]["selector"].items() <= labels.items()
    pdb = _one("PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    port_names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in _one("Service")["spec"]["ports"]} <= port_names


def test_compose_references_resolve() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    volumes = set(compose.get("volumes") or {})
    assert {"runtime", "redis", "prometheus", "grafana", "otel-collector", "jaeger"} <= set(
        services
    )
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dependency in service.get("depends_on", []):
            assert dependency in services, (name, dependency)
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), (name, source)
            else:
                assert source in volumes, (name, source)
        if "build" in service:
            assert (DEPLOY / service["build"] / "Dockerfile").is_file(), name
    env = services["runtime"]["environment"]
    collector = env["RUNTIME_TRACING__ENDPOINT"].split("//")[1].split(":")[0]
    assert collector in services


def test_prometheus_config_scrapes_the_runtime_job_the_alerts_read() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert [job["job_name"] for job in config["scrape_configs"]] == ["runtime"]
    assert 'up{job="runtime"}' in (DEPLOY / "prometheus" / "alerts.yml").read_text()
    for name in config["rule_files"]:
        assert (DEPLOY / "prometheus" / name).is_file()


def test_the_collector_pipelines_name_only_defined_components() -> None:
    config = yaml.safe_load((DEPLOY / "otel" / "collector.yaml").read_text())
    for pipeline in config["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], (kind, component)
    for extension in config["service"].get("extensions", []):
        assert extension in config["extensions"]
    jaeger = config["exporters"]["otlp/jaeger"]["endpoint"].split(":")[0]
    assert jaeger in yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]


def test_grafana_files_parse_and_name_the_provisioned_datasource() -> None:
    datasources = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )["datasources"]
    uids = {d["uid"] for d in datasources}
    providers = DEPLOY / "grafana" / "provisioning" / "dashboards" / "runtime.yaml"
    (provider,) = yaml.safe_load(providers.read_text())["providers"]
    grafana = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["grafana"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in grafana["volumes"]
    for path in (DEPLOY / "grafana" / "dashboards").glob("*.json"):
        dashboard = json.loads(path.read_text())
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                assert target["datasource"]["uid"] in uids, (path.name, panel["title"])
    for path in DEPLOY.rglob("*.json"):
        json.loads(path.read_text())


def test_every_alert_has_a_runbook_section() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {
        line.lstrip("#").strip().lower() for line in runbook.splitlines() if line.startswith("#")
    }
    anchors |= set(re.findall(r'<a id="([^"]+)"></a>', runbook))
    for group in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]:
        for rule in group["rules"]:
            url = rule["annotations"]["runbook_url"]
            assert url == f"docs/runbook.md#{rule['alert'].lower()}", rule["alert"]
            assert url.split("#")[1] in anchors, rule["alert"]
