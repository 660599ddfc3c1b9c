"""Diagnosis end to end: a real fault, the alert engine fires, the incident opens with its diagnosis
on the timeline, the API returns it and the CLI prints it.

Faults are real: the vector index directory replaced by a file (the store cannot write), and a real
PostgreSQL server stopped under the instance.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.cli import app as cli_app
from tests.conftest import LOOPBACK_CLIENT, LiveServer, admin_key, auth, make_settings


def break_vector_store(rt: Runtime) -> None:
    index_dir = rt.settings.index_dir
    shutil.rmtree(index_dir)
    index_dir.write_text("not a directory any more")


def fire(rt: Runtime, alertname: str) -> str:
    """Tick the alert engine until ``alertname`` fires and files an incident; its id."""
    assert rt.alerts is not None
    t0 = time.time()
    for step in range(6):  # the P1 rules hold for 3 s: pending at the first tick, firing after
        rt.alerts.tick(t0 + 2 * step)
        for incident in rt.incidents.list(status="open"):
            if incident["title"].startswith(alertname):
                return incident["id"]
    raise AssertionError(f"{alertname} never opened an incident: {rt.alerts.engine.alerts()}")


def test_a_broken_vector_store_is_diagnosed_on_the_timeline_in_the_api_and_in_the_cli(
    sample_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = sample_runtime
    rt.health.cache_s = 0.0  # every tick sees the check as it is now
    break_vector_store(rt)
    incident_id = fire(rt, "VectorStoreDown")
    assert rt.diagnosis_worker.drain()  # diagnosed on its own thread, not the evaluator's

    timeline = rt.incidents.get(incident_id)["timeline"]
    written = [e for e in timeline if e["kind"] == "diagnosis"]
    assert len(written) == 1 and written[0]["actor"] == "ragvigil"
    detail = written[0]["detail"]
    assert detail["likely_cause"] == "vector_store_down"
    top = detail["causes"][0]
    signals = [e["signal"] for e in top["evidence"]]
    assert "health check vector_store failing" in signals
    assert any(s.startswith("alert VectorStoreDown") for s in signals)
    assert all(e["since"] for e in top["evidence"])  # each signal says since when
    assert {a["name"] for a in top["actions"]} == {"retrieval.lexical_only", "vectors.requeue"}
    assert "not writable" in next(e["value"] for e in top["evidence"] if e["kind"] == "health_failing")

    key = admin_key(rt)
    with TestClient(create_app(runtime=rt), client=LOOPBACK_CLIENT, headers=auth(key)) as client:
        r = client.get(f"/api/v1/ops/incidents/{incident_id}/diagnosis")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["incident_id"] == incident_id and body["causes"][0]["cause"] == "vector_store_down"
        assert body["at_open"]["likely_cause"] == "vector_store_down"
        assert body["symptoms"]["checks"]["vector_store"]["ok"] is False
        now = client.get("/api/v1/ops/diagnosis").json()
        assert now["incident_id"] is None and now["likely_cause"] == "vector_store_down"
        missing = client.get("/api/v1/ops/incidents/nope/diagnosis")
        assert missing.status_code == 404 and missing.json()["code"] == "incident_not_found"
        viewer = rt.keys.create("looker", role=__import__("ragvigil.ops.access", fromlist=["Role"]).Role.viewer)[1]
        assert client.get("/api/v1/ops/diagnosis", headers=auth(viewer)).status_code == 200
        assert client.get("/api/v1/ops/diagnosis", headers={"Authorization": ""}).status_code == 401

    with LiveServer(create_app(runtime=rt)) as base:
        monkeypatch.setenv("RAGVIGIL_API_KEY", key)
        runner = CliRunner()
        r = runner.invoke(cli_app, ["diagnose", incident_id, "--url", base], env={"COLUMNS": "200"})
        assert r.exit_code == 0, r.output
        assert "vector_store_down" in r.output and "health check vector_store failing" in r.output
        assert "runbook for vector_store_down" in r.output
        r = runner.invoke(cli_app, ["diagnose", "--url", base, "--json"])
        assert r.exit_code == 0 and r.stdout.startswith("{"), r.output
        assert json.loads(r.stdout)["causes"][0]["cause"] == "vector_store_down"
        r = runner.invoke(cli_app, ["diagnose", "nope", "--url", base])
        assert r.exit_code == 1 and "incident_not_found" in r.output


def test_offline_the_cli_diagnoses_from_the_data_dir(sample_runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no instance answering, the CLI reads what the service filed and the diagnosis written at open."""
    from tests.realservers import free_port

    rt = sample_runtime
    rt.health.cache_s = 0.0
    break_vector_store(rt)
    incident_id = fire(rt, "VectorStoreDown")
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(rt.settings.data_dir))
    monkeypatch.setenv("RAGVIGIL_PORT", str(free_port()))  # nothing listens there
    r = CliRunner().invoke(cli_app, ["diagnose", incident_id[:8], "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["incident_id"] == incident_id and out["at_open"]["likely_cause"] == "vector_store_down"
    assert "VectorStoreDown" in [a["name"] for a in out["symptoms"]["alerts"]]  # as the service filed it
    assert any(n.startswith("offline") for n in out["symptoms"]["notes"])


def test_a_stopped_postgresql_is_diagnosed_as_the_database(tmp_path: Path) -> None:
    """A real PostgreSQL server stops under the instance; the current diagnosis names the database."""
    from tests.realservers import ServerUnavailable, create_database, postgres_server

    try:
        server = postgres_server()
        url = server.__enter__()
    except ServerUnavailable as exc:
        pytest.skip(f"PostgreSQL not available: {exc}")
    stopped = False
    try:
        rt = Runtime(make_settings(tmp_path / "data", database_url=create_database(url, "diag")))
        try:
            rt.health.cache_s = 0.0
            # by name, not by rank: other causes may read this process's stage histogram, which
            # earlier tests in the same process filled (a slow generate stage ranks llm_provider_slow)
            assert "database_down" not in {c["cause"] for c in rt.diagnosis.diagnose()["causes"]}
            server.__exit__(None, None, None)  # the fault: the server is gone
            stopped = True
            result = rt.diagnosis.diagnose()
            db_down = next((c for c in result["causes"] if c["cause"] == "database_down"), None)
            assert db_down is not None and db_down["confidence"] > 0, result["causes"]
            evidence = db_down["evidence"]
            assert evidence[0]["signal"] == "health check database failing" and evidence[0]["since"]
            assert result["symptoms"]["rollup"]["chat"] == "unhealthy"
        finally:
            rt.close()
    finally:
        if not stopped:
            server.__exit__(None, None, None)
