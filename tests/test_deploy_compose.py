"""deploy/compose, deploy/prometheus, deploy/alertmanager: the scaled topology, validated without an engine."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ragvigil.config import Settings
from ragvigil.config_example import entries
from ragvigil.ops.alerts.export import to_alertmanager, to_prometheus
from ragvigil.ops.alerts.rules import default_rules
from tests.deploy_tools import DEPLOY, tool

COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
PROMETHEUS = DEPLOY / "prometheus"
REPLICAS = ("ragvigil-1", "ragvigil-2")
LONG_RUNNING = ("postgres", "redis", "chroma", *REPLICAS, "nginx", "prometheus", "alertmanager")


def compose_command() -> list[str]:
    """Debian's docker-compose (v1), else the docker compose v2 plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30).returncode == 0:
        return [docker, "compose"]
    return [tool("docker-compose", why=" (nor the docker compose plugin)")]


def compose_config(env: dict[str, str] | None = None, *extra: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [*compose_command(), "-f", str(COMPOSE), "config", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=COMPOSE.parent,
        env={k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"} | (env or {}),
    )


def volumes(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume: v1 prints "source:target:mode", v2 a mapping."""
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, str):
            source, target = v.split(":")[:2]
            out.append((source, target))
        else:
            out.append((v["source"], v["target"]))
    return out


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The file as compose resolves it (anchors merged, variables filled in)."""
    out = compose_config({"POSTGRES_PASSWORD": "not-a-real-password"})
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_compose_config_is_valid() -> None:
    out = compose_config({"POSTGRES_PASSWORD": "not-a-real-password"}, "-q")
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_database_password_is_never_committed() -> None:
    out = compose_config({}, "-q")
    assert out.returncode != 0 and "POSTGRES_PASSWORD" in out.stderr


def test_every_server_has_a_health_check_and_waits_for_healthy_dependencies(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert set(LONG_RUNNING) <= set(services)
    for name in LONG_RUNNING:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    for name in (*REPLICAS, "nginx", "prometheus"):
        deps = services[name]["depends_on"]
        assert deps and all(d["condition"].startswith("service_") for d in deps.values()), name
    for name in REPLICAS:
        deps = services[name]["depends_on"]
        assert deps["redis"]["condition"] == deps["chroma"]["condition"] == "service_healthy"
        assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert {d: c["condition"] for d, c in services["nginx"]["depends_on"].items()} == dict.fromkeys(
        REPLICAS, "service_healthy"
    )


def test_replicas_run_the_scaled_mode_and_stop_after_the_drain(resolved: dict[str, Any]) -> None:
    known = {e.env_name for e in entries()}
    has_vector_store = "vector_store" in Settings.model_fields
    sources: set[str] = set()
    for name in REPLICAS:
        svc = resolved["services"][name]
        env = svc["environment"]
        assert env["RAGVIGIL_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["RAGVIGIL_REDIS__URL"].startswith("redis://redis:")
        assert env["RAGVIGIL_VECTOR_STORE__BACKEND"] == "chroma"
        for var in env:
            if var.startswith("RAGVIGIL_") and (has_vector_store or not var.startswith("RAGVIGIL_VECTOR_STORE__")):
                assert var in known, f"{name}: {var} is not a setting"
        grace = float(env.get("RAGVIGIL_SHUTDOWN_GRACE_S", Settings.model_fields["shutdown_grace_s"].default))
        period = svc["stop_grace_period"]
        assert period.endswith("s") and float(period[:-1]) > grace
        assert "/health/ready" in " ".join(svc["healthcheck"]["test"])
        data = {source for source, target in volumes(svc) if target == "/var/lib/ragvigil"}
        assert len(data) == 1, name
        sources |= data
    assert len(sources) == len(REPLICAS), "each replica keeps its own data dir (journal, logs)"


def test_nginx_and_prometheus_point_at_both_replicas(resolved: dict[str, Any]) -> None:
    conf = (DEPLOY / "nginx" / "ragvigil.conf").read_text()
    for name in REPLICAS:
        assert f"server {name}:8000 " in conf
    prom = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "ragvigil")
    assert job["static_configs"][0]["targets"] == [f"{n}:8000" for n in REPLICAS]
    mounts = {target for _, target in volumes(resolved["services"]["prometheus"])}
    assert "/etc/prometheus/ragvigil-rules.yml" in mounts


def test_prometheus_rules_are_what_ragvigil_exports() -> None:
    """Regenerate with `ragvigil alerts export -o deploy/prometheus/ragvigil-rules.yml` when a rule changes."""
    prom = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert prom["rule_files"] == ["ragvigil-rules.yml"]
    expected = to_prometheus(default_rules(), Settings(_env_file=None).alerts.eval_interval, "ragvigil")  # type: ignore[call-arg]
    assert (PROMETHEUS / "ragvigil-rules.yml").read_text() == expected


def test_promtool_checks_the_config_and_its_rules() -> None:
    promtool = tool("promtool")
    out = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"], capture_output=True, text=True, timeout=60, cwd=PROMETHEUS
    )
    assert out.returncode == 0 and "rules found" in out.stdout, out.stdout + out.stderr


def test_alertmanager_config_is_the_export_with_a_key_file() -> None:
    path = DEPLOY / "alertmanager" / "alertmanager.yml"
    committed = yaml.safe_load(path.read_text())
    hook = committed["receivers"][0]["webhook_configs"][0]
    auth = hook.pop("http_config")["authorization"]
    assert auth == {"type": "Bearer", "credentials_file": "/etc/alertmanager/ragvigil.key"}
    assert committed == yaml.safe_load(to_alertmanager(hook["url"]))
    assert hook["url"] == "http://nginx:8080/api/v1/ops/alerts/webhook"
    amtool = tool("amtool", why=" (Debian's prometheus-alertmanager)")
    out = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_broken_prometheus_config_is_caught(tmp_path: Path) -> None:
    promtool = tool("promtool")
    for f in PROMETHEUS.iterdir():
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "ragvigil-rules.yml").write_text(
        (tmp_path / "ragvigil-rules.yml").read_text().replace("expr:", "exp:", 1)
    )
    out = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert out.returncode != 0
