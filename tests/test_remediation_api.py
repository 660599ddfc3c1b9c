"""Actions by hand (operator, audited) and the remediation status an operator reads."""

from __future__ import annotations

from fastapi.testclient import TestClient

from ragvigil.app import Runtime
from ragvigil.ops.remediation import ACTOR

QUESTION = "How do I export my notes to PDF?"


def test_cache_clear_by_hand_empties_the_query_cache_and_a_second_run_changed_nothing(
    client: TestClient, sample_runtime: Runtime
) -> None:
    rt = sample_runtime
    rt.embedder.embed_query(QUESTION)
    r = client.post("/api/v1/ops/actions/cache.clear", json={})
    assert r.status_code == 200, r.text
    assert r.json()["changed"] == "dropped 1 cached query embedding(s)" and r.json()["result"] == "applied"
    misses = rt.embedder.misses
    rt.embedder.embed_query(QUESTION)  # embedded again: the cache really was emptied
    assert rt.embedder.misses == misses + 1
    assert client.post("/api/v1/ops/actions/cache.clear", json={}).status_code == 200  # one entry again
    again = client.post("/api/v1/ops/actions/cache.clear", json={})
    assert again.status_code == 409 and again.json()["code"] == "nothing_changed"
    audited = rt.audit.query(action="remediation.cache.clear")
    assert [a.result for a in audited] == ["failed", "applied", "applied"]
    actors = {a.actor for a in audited}
    assert len(actors) == 1 and ACTOR not in actors  # the operator who ran it, not the automatic remediator


def test_vectors_requeue_puts_a_lost_vector_back_in_the_queue(client: TestClient, sample_runtime: Runtime) -> None:
    rt = sample_runtime
    lost = sorted(rt.vectors.ids("default"))[0]
    rt.vectors.delete("default", [lost])  # the index lost a vector its chunk says it has
    assert rt.ingestor.pending_vectors() == 0
    r = client.post("/api/v1/ops/actions/vectors.requeue", json={})
    assert r.status_code == 200 and r.json()["changed"] == "re-queued 1 chunk(s) for embedding", r.text
    assert rt.ingestor.pending_vectors() == 1
    rt.filler.drain()
    assert lost in rt.vectors.ids("default")
    nothing = client.post("/api/v1/ops/actions/vectors.requeue", json={})
    assert nothing.status_code == 409 and nothing.json()["code"] == "nothing_changed"


def test_unknown_actions_incidents_and_bad_params_are_4xx(client: TestClient) -> None:
    r = client.post("/api/v1/ops/actions/no.such", json={})
    assert r.status_code == 404 and r.json()["code"] == "action_not_found" and "cache.clear" in r.json()["message"]
    r = client.post("/api/v1/ops/actions/cache.clear", json={"incident_id": "nope"})
    assert r.status_code == 404 and r.json()["code"] == "incident_not_found"
    r = client.post("/api/v1/ops/actions/cache.clear", json={"params": {f"p{i}": i for i in range(20)}})
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    r = client.post("/api/v1/ops/actions/journal.replay", json={"rollback": True})
    assert r.status_code == 409 and "no rollback" in r.json()["message"]


def test_the_status_lists_policies_actions_and_recent_runs(client: TestClient, sample_runtime: Runtime) -> None:
    sample_runtime.embedder.embed_query(QUESTION)
    client.post("/api/v1/ops/actions/cache.clear", json={})
    body = client.get("/api/v1/ops/remediation").json()
    policies = {p["name"]: p for p in body["policies"]}
    assert policies["replay-journal"]["action"] == "journal.replay" and policies["replay-journal"]["available"]
    assert {"journal.replay", "cache.clear", "vectors.requeue", "process.restart"} <= {
        a["name"] for a in body["actions"]
    }
    [run] = body["recent"]
    assert run["action"] == "cache.clear" and run["trigger"]["manual"] and run["stage"] == "applied"
