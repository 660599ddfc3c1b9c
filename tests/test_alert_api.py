"""The incidents, silences, deliveries and Alertmanager-webhook API, and the alerts CLI on the same records."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ragvigil.app import Runtime
from ragvigil.cli import app as cli_app

AM_PAYLOAD = {
    "version": "4",
    "groupKey": '{}:{alertname="HighErrorRate"}',
    "status": "firing",
    "receiver": "ragvigil",
    "groupLabels": {"alertname": "HighErrorRate"},
    "commonLabels": {},
    "commonAnnotations": {},
    "externalURL": "http://127.0.0.1:9093",
    "truncatedAlerts": 0,
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "HighErrorRate", "severity": "P2", "instance": "127.0.0.1:8000"},
            "annotations": {"summary": "9.1% of requests fail with 5xx"},
            "startsAt": "2026-11-24T06:00:00.000Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph",
            "fingerprint": "a1b2c3d4e5f60718",
        }
    ],
}


def test_webhook_opens_one_incident_however_often_it_is_delivered(client: TestClient) -> None:
    for _ in range(3):  # Alertmanager re-sends groups and retries
        r = client.post("/api/v1/ops/alerts/webhook", json=AM_PAYLOAD)
        assert r.status_code == 200, r.text
    assert client.app.state.runtime.diagnosis_worker.drain()  # the diagnosis is written off the request
    incidents = client.get("/api/v1/ops/incidents").json()["incidents"]
    assert len(incidents) == 1 and incidents[0]["source"] == "alertmanager" and incidents[0]["severity"] == "P2"
    resolved = json.loads(json.dumps(AM_PAYLOAD))
    resolved["status"] = resolved["alerts"][0]["status"] = "resolved"
    resolved["alerts"][0]["endsAt"] = "2026-11-24T06:05:00Z"
    client.post("/api/v1/ops/alerts/webhook", json=resolved)
    client.post("/api/v1/ops/alerts/webhook", json=resolved)
    detail = client.get(f"/api/v1/ops/incidents/{incidents[0]['id']}").json()
    assert detail["status"] == "resolved" and detail["alerts"][0]["ends_at"].startswith("2026-11-24T06:05:00")
    kinds = ["opened", "alert_firing", "diagnosis", "alert_resolved", "resolved"]  # diagnosed when it opened
    assert [e["kind"] for e in detail["timeline"]] == kinds


def test_bad_webhook_bodies_get_422_and_unknown_incidents_404(client: TestClient) -> None:
    r = client.post("/api/v1/ops/alerts/webhook", json={"groupKey": "g", "status": "weird", "alerts": []})
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    r = client.get("/api/v1/ops/incidents/nope")
    assert r.status_code == 404 and r.json()["code"] == "incident_not_found"
    assert client.post("/api/v1/ops/incidents/nope/ack").json()["code"] == "incident_not_found"


def test_acknowledge_is_on_the_timeline_and_in_the_audit_log(client: TestClient, sample_runtime: Runtime) -> None:
    client.post("/api/v1/ops/alerts/webhook", json=AM_PAYLOAD)
    assert sample_runtime.diagnosis_worker.drain()  # its diagnosis written before the ack, not after
    incident = client.get("/api/v1/ops/incidents", params={"status": "open"}).json()["incidents"][0]
    r = client.post(f"/api/v1/ops/incidents/{incident['id']}/ack", json={"comment": "rolling back"})
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    timeline = client.get(f"/api/v1/ops/incidents/{incident['id']}").json()["timeline"]
    assert timeline[-1]["kind"] == "acknowledged" and timeline[-1]["detail"]["comment"] == "rolling back"
    assert sample_runtime.audit.query(action="incident.ack")[0].result == "ok"


def test_silences_validate_matchers_and_expire(client: TestClient) -> None:
    bad = client.post(
        "/api/v1/ops/silences",
        json={"matchers": [{"name": "x", "op": "~~", "value": "y"}], "duration": "1h", "comment": "c"},
    )
    assert bad.status_code == 422 and bad.json()["field"].startswith("matchers.0") and "op" in bad.json()["field"]
    bad = client.post("/api/v1/ops/silences", json={"matchers": ['severity=~"P[1"'], "duration": "1h", "comment": "c"})
    assert bad.status_code == 422 and "regular expression" in bad.json()["message"]
    no_end = client.post("/api/v1/ops/silences", json={"matchers": ['severity="P3"'], "comment": "c"})
    assert no_end.status_code == 422
    ok = client.post(
        "/api/v1/ops/silences", json={"matchers": ['severity="P3"'], "duration": "2h", "comment": "maintenance"}
    )
    assert ok.status_code == 201 and ok.json()["state"] == "active"
    sid = ok.json()["id"]
    assert [s["id"] for s in client.get("/api/v1/ops/silences").json()["silences"]] == [sid]
    assert client.delete(f"/api/v1/ops/silences/{sid}").json()["state"] == "expired"
    assert client.get("/api/v1/ops/silences").json()["silences"] == []
    assert client.delete("/api/v1/ops/silences/nope").status_code == 404


def test_the_cli_reads_and_acts_on_the_same_records(client: TestClient, sample_runtime: Runtime, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    client.post("/api/v1/ops/alerts/webhook", json=AM_PAYLOAD)
    assert sample_runtime.diagnosis_worker.drain()
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(sample_runtime.settings.data_dir))
    runner = CliRunner()
    listed = runner.invoke(cli_app, ["alerts", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [r["alertname"] for r in rows] == ["HighErrorRate"]
    acked = runner.invoke(cli_app, ["alerts", "ack", rows[0]["incident"][:8], "--comment", "on it", "--who", "ana"])
    assert acked.exit_code == 0 and "acknowledged by ana" in acked.stdout
    made = runner.invoke(
        cli_app, ["alerts", "silence", 'alertname="HighCPU"', "--for", "30m", "--comment", "load test"]
    )
    assert made.exit_code == 0, made.output
    assert "HighCPU" in runner.invoke(cli_app, ["alerts", "silence"]).stdout
    assert runner.invoke(cli_app, ["alerts", "silence", "bad matcher", "--comment", "x"]).exit_code == 2
    hist = json.loads(runner.invoke(cli_app, ["alerts", "history", "--since", "1000d", "--json"]).stdout)
    assert [e["kind"] for e in hist[0]["timeline"]][-1] == "acknowledged"
    missing = runner.invoke(cli_app, ["alerts", "test-channel", "nope"])
    assert missing.exit_code == 2 and "no channel" in missing.output


def test_a_stalled_evaluation_pages_through_the_channels_and_files_an_incident(
    sample_data_dir, tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    import shutil
    import time

    from tests.conftest import make_settings
    from tests.receivers import http_receiver

    d = tmp_path / "data"
    shutil.copytree(sample_data_dir, d)
    with http_receiver() as hook:
        channels = [{"name": "ops", "type": "webhook", "url": hook.url}]
        rt = Runtime(make_settings(d, alerts={"channels": channels}))
        try:
            rt.notifier.start()
            since = time.time() - 60
            rt.stall_alert(True, since)
            rt.stall_alert(False, since)
            assert rt.notifier.drain(10)
            statuses = [r.body["alerts"][0]["status"] for r in hook.wait_for(2)]
            assert statuses == ["firing", "resolved"]
            assert hook.requests[0].body["alerts"][0]["labels"]["alertname"] == "AlertEvaluationStalled"
            incident = rt.incidents.list()[0]
            assert incident["severity"] == "P1" and incident["status"] == "resolved"
            assert [d["outcome"] for d in rt.notifier.deliveries()] == ["sent", "sent"]

            monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(d))
            out = CliRunner().invoke(cli_app, ["alerts", "deliveries", "--json"])
            assert out.exit_code == 0 and [x["channel"] for x in json.loads(out.stdout)] == ["ops", "ops"]
        finally:
            rt.close()
