"""The scaled path, live: Prometheus scrapes a running ragvigil, an induced fault fires an exported rule,
Alertmanager delivers it to ragvigil's webhook, and the incident appears through the API."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.ops.alerts.export import to_alertmanager, to_prometheus
from ragvigil.ops.alerts.rules import default_rules
from tests.realservers import ServerUnavailable, alertmanager_server, prometheus_server, wait_until


def prometheus_config(ragvigil: str, alertmanager: str) -> str:
    return f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [ragvigil.rules.yml]
alerting:
  alertmanagers: [{{static_configs: [{{targets: ["{alertmanager.removeprefix("http://")}"]}}]}}]
scrape_configs:
  - job_name: ragvigil
    static_configs: [{{targets: ["{ragvigil.removeprefix("http://")}"]}}]
"""


def test_a_real_fault_reaches_an_incident_through_prometheus_and_alertmanager(sample_runtime: Runtime) -> None:
    from tests.conftest import LiveServer, admin_key, auth

    sample_runtime.health.cache_s = 0.5
    try:
        with LiveServer(create_app(runtime=sample_runtime)) as base:
            webhook = f"{base}/api/v1/ops/alerts/webhook"
            key = admin_key(sample_runtime)
            am_config = to_alertmanager(webhook, key, group_wait="1s", group_interval="2s", repeat_interval="1m")
            with (
                alertmanager_server(am_config) as am,
                prometheus_server(
                    prometheus_config(base, am), {"ragvigil.rules.yml": to_prometheus(default_rules(), 1.0)}
                ) as prom,
            ):
                wait_until(
                    lambda: httpx.get(f"{prom}/api/v1/targets").json()["data"]["activeTargets"][0]["health"] == "up",
                    30,
                    "Prometheus scraping ragvigil",
                )
                index_dir = sample_runtime.settings.index_dir
                shutil.rmtree(index_dir)
                index_dir.write_text("not a directory any more")  # the fault
                fault_at = time.monotonic()

                def incident() -> dict | None:
                    for i in httpx.get(f"{base}/api/v1/ops/incidents", headers=auth(key)).json()["incidents"]:
                        if i["source"] == "alertmanager" and i["title"].startswith("VectorStoreDown"):
                            return i
                    return None

                found = wait_until(incident, 60, "the VectorStoreDown incident from Alertmanager", interval=0.25)
                took = time.monotonic() - fault_at
                detail = httpx.get(f"{base}/api/v1/ops/incidents/{found['id']}", headers=auth(key)).json()
                alert = detail["alerts"][0]
                assert alert["labels"]["job"] == "ragvigil" and alert["labels"]["check"] == "vector_store"
                assert detail["severity"] == "P1" and took < 60
    except ServerUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))


def test_a_missing_binary_is_reported_not_hidden(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServerUnavailable, match="prometheus"), prometheus_server("", {}):
        pass
