"""The at-open diagnosis runs on a bounded worker of its own, never on the thread that opened the incident.

The webhook test holds the real diagnoser's snapshot at a gate: the webhook must answer while the
diagnosis is still waiting, and the diagnosis must reach the timeline once the gate opens.
"""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient

from ragvigil.app import Runtime
from ragvigil.ops import metrics
from ragvigil.ops.diagnosis.worker import DiagnosisWorker
from tests.test_alert_api import AM_PAYLOAD


def _kinds(client: TestClient, incident_id: str) -> list[str]:
    return [e["kind"] for e in client.get(f"/api/v1/ops/incidents/{incident_id}").json()["timeline"]]


def test_the_webhook_answers_before_the_diagnosis_is_written_and_the_diagnosis_follows(
    client: TestClient, sample_runtime: Runtime
) -> None:
    rt = sample_runtime
    gate, entered = threading.Event(), threading.Event()
    snapshot = rt.diagnosis.collector.snapshot

    def held(now: float):  # type: ignore[no-untyped-def]
        entered.set()
        gate.wait(30)  # bounded: a broken test never hangs the run
        return snapshot(now)

    rt.diagnosis.collector.snapshot = held  # type: ignore[method-assign]
    try:
        r = client.post("/api/v1/ops/alerts/webhook", json=AM_PAYLOAD)
        assert r.status_code == 200, r.text
        [incident] = client.get("/api/v1/ops/incidents").json()["incidents"]
        assert "diagnosis" not in _kinds(client, incident["id"])  # answered while the diagnosis waits
        assert entered.wait(10)  # ...and the diagnosis did start, on the worker
        assert rt.diagnosis_worker.pending() == 1
    finally:
        gate.set()
    assert rt.diagnosis_worker.drain(30)
    kinds = _kinds(client, incident["id"])
    assert kinds.count("diagnosis") == 1, kinds
    recorded = client.get(f"/api/v1/ops/incidents/{incident['id']}/diagnosis").json()
    assert recorded["at_open"] is not None and "causes" in recorded["at_open"]


def _dropped() -> float:
    return metrics.REGISTRY.get_sample_value("ragvigil_diagnosis_dropped_total") or 0.0


def test_a_full_queue_drops_the_oldest_waiting_incident_and_counts_it() -> None:
    gate, done, started = threading.Event(), [], threading.Event()

    def handle(incident_id: str) -> None:
        started.set()
        gate.wait(30)
        done.append(incident_id)

    worker = DiagnosisWorker(handle, max_queued=2)
    before = _dropped()
    try:
        worker.submit("a")
        assert started.wait(10)  # "a" is being diagnosed: the queue holds the others
        for incident in ("b", "c", "d"):
            worker.submit(incident)
        assert worker.pending() == 3 and _dropped() - before == 1  # "b", the oldest waiting, went
        gate.set()
        assert worker.drain(30)
        assert done == ["a", "c", "d"]
    finally:
        gate.set()
        worker.stop()


def test_a_failing_diagnosis_does_not_stop_the_worker() -> None:
    done: list[str] = []

    def handle(incident_id: str) -> None:
        if incident_id == "bad":
            raise RuntimeError("boom")
        done.append(incident_id)

    worker = DiagnosisWorker(handle)
    try:
        worker.submit("bad")
        worker.submit("good")
        assert worker.drain(30)
        assert done == ["good"]
    finally:
        worker.stop()
    worker.submit("late")  # after stop: not queued, never raises
    assert worker.pending() == 0
