"""deploy/k8s: valid against the Kubernetes schemas (strict, offline), and the numbers the issue asks for."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ragvigil.api.routes.health import live, probes, ready
from ragvigil.config import SecretUrl, Settings
from ragvigil.config_example import entries
from tests.deploy_tools import DEPLOY, tool

K8S = DEPLOY / "k8s"


def manifests() -> dict[str, dict[str, Any]]:
    """Every object of deploy/k8s by kind (one object of each kind)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert doc["kind"] not in out or doc["kind"] == "Job", f"two {doc['kind']}s"
                out.setdefault(doc["kind"], doc)
    return out


def container() -> dict[str, Any]:
    return manifests()["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def _route(endpoint: object) -> str:
    return next(r.path for r in probes.routes if getattr(r, "endpoint", None) is endpoint)


def test_manifests_validate_strictly(tmp_path: Path) -> None:
    validate = tool("kubernetes-validate", why=" (the dev extra)")
    files = sorted(str(p) for p in K8S.glob("*.yaml"))
    out = subprocess.run([validate, "--strict", "--quiet", *files], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    bad = tmp_path / "deployment.yaml"  # the validator does catch a misspelt field
    bad.write_text((K8S / "deployment.yaml").read_text().replace("periodSeconds:", "periodSecond:", 1))
    out = subprocess.run([validate, "--strict", "--quiet", str(bad)], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "periodSecond" in out.stdout + out.stderr


def test_hpa_scales_2_to_20_with_5_minute_scale_down_and_x1_5_scale_up() -> None:
    hpa = manifests()["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 20)
    assert spec["scaleTargetRef"]["name"] == manifests()["Deployment"]["metadata"]["name"]
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    up = spec["behavior"]["scaleUp"]["policies"]
    assert {"type": "Percent", "value": 50, "periodSeconds": 60} in up
    assert all(p["type"] != "Pods" for p in up), "a Pods policy could add more than x1.5"


def test_probes_use_the_real_routes() -> None:
    c = container()
    assert c["livenessProbe"]["httpGet"]["path"] == _route(live)
    assert c["startupProbe"]["httpGet"]["path"] == _route(live)
    assert c["readinessProbe"]["httpGet"]["path"] == _route(ready)
    port = int(manifests()["ConfigMap"]["data"]["RAGVIGIL_PORT"])
    assert {"name": "http", "containerPort": port, "protocol": "TCP"} in c["ports"]


def test_termination_grace_outlasts_prestop_and_the_drain() -> None:
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    data = manifests()["ConfigMap"]["data"]
    drain = float(data.get("RAGVIGIL_SHUTDOWN_GRACE_S", Settings.model_fields["shutdown_grace_s"].default))
    pre_stop = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain


def test_non_root_read_only_root_with_writable_data_dir() -> None:
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    c = container()
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert manifests()["ConfigMap"]["data"]["RAGVIGIL_DATA_DIR"] in mounts and "/tmp" in mounts
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


def test_secrets_are_references_only() -> None:
    assert "Secret" not in manifests(), "no Secret (with values) is committed"
    env = {e["name"]: e for e in container()["env"]}
    for name in ("RAGVIGIL_DATABASE_URL", "RAGVIGIL_REDIS__URL", "RAGVIGIL_OPENAI__API_KEY"):
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"] == "ragvigil-secrets"
    secret_names = {e.env_name for e in entries() if e.secret}
    for name, value in manifests()["ConfigMap"]["data"].items():
        if name in secret_names:  # a secret-typed URL is fine there only while it carries no credentials
            assert SecretUrl(value).masked() == value, f"{name} in the ConfigMap holds a secret"


def test_configmap_names_real_settings() -> None:
    known = {e.env_name for e in entries()}
    has_vector_store = "vector_store" in Settings.model_fields
    for name in manifests()["ConfigMap"]["data"]:
        if not name.startswith("RAGVIGIL_"):
            continue
        if name.startswith("RAGVIGIL_VECTOR_STORE__") and not has_vector_store:
            continue  # the vector-store settings land with the Chroma-backed VectorStore
        assert name in known, f"{name} is not a setting"


def test_pdb_and_network_policy() -> None:
    m = manifests()
    labels = m["Deployment"]["spec"]["selector"]["matchLabels"]
    assert m["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
    assert m["PodDisruptionBudget"]["spec"]["minAvailable"] < m["HorizontalPodAutoscaler"]["spec"]["minReplicas"]
    np = m["NetworkPolicy"]["spec"]
    assert np["podSelector"]["matchLabels"] == labels and set(np["policyTypes"]) == {"Ingress", "Egress"}
    assert [p["port"] for r in np["ingress"] for p in r["ports"]] == [8000]
    egress = {(p["protocol"], p["port"]) for r in np["egress"] for p in r["ports"]}
    assert {("TCP", 5432), ("TCP", 6379), ("TCP", 8000), ("UDP", 53), ("TCP", 53)} == egress


@pytest.mark.parametrize("kind", ["Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy"])
def test_every_kind_is_there(kind: str) -> None:
    assert kind in manifests()
