"""Fault injection through the admin API: each target's effect is observable the way a real failure's
is (degraded answers, journaled turns, 503s), every fault ends by itself or when cleared, and the
API is refused when fault injection is off (409) or for anyone but an admin (403)."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.ops import metrics
from ragvigil.ops.access import Role
from ragvigil.ops.admin_key import read_admin_key
from tests.conftest import LOOPBACK_CLIENT, LiveServer, admin_key, auth, local_client, make_settings, metric_value
from tests.realservers import wait_until
from tests.slow_llm import SlowLLM, slow_llm

QUESTION = "How do I export my notes?"


def _runtime(sample_data_dir: Path, tmp_path: Path, **overrides: object) -> Runtime:
    d = tmp_path / "drilled"
    shutil.copytree(sample_data_dir, d)
    return Runtime(make_settings(d, faults={"enabled": True}, **overrides))


@pytest.fixture
def rt(sample_data_dir: Path, tmp_path: Path) -> Iterator[Runtime]:
    runtime = _runtime(sample_data_dir, tmp_path)
    yield runtime
    runtime.close()


@pytest.fixture
def admin(rt: Runtime) -> Iterator[TestClient]:
    with local_client(create_app(runtime=rt), admin_key(rt)) as c:
        yield c


@pytest.fixture
def llm() -> Iterator[SlowLLM]:
    with slow_llm(hold_s=5.0) as server:
        server.release()  # answers at once
        yield server


def _inject(c: TestClient, target: str, kind: str, duration_s: float = 60, **params: float) -> dict:
    r = c.post("/api/v1/ops/faults", json={"target": target, "kind": kind, "duration_s": duration_s, "params": params})
    assert r.status_code == 201, r.text
    return r.json()


def _hits(target: str) -> float:
    """Read from the registry itself: under a latency fault /metrics is held like every other route."""
    return metrics.REGISTRY.get_sample_value("ragvigil_fault_hits_total", {"target": target}) or 0.0


def _audit(rt: Runtime) -> list[tuple[str, str, str | None]]:
    return [(e.action, e.result, e.target) for e in rt.audit.query(limit=1000)]


def test_refused_unless_enabled_and_only_for_an_admin(client: TestClient, rt: Runtime, admin: TestClient) -> None:
    body = {"target": "vector_store", "kind": "error", "duration_s": 10}
    r = client.post("/api/v1/ops/faults", json=body)  # the sample instance: fault injection off
    assert r.status_code == 409 and r.json()["code"] == "faults_disabled"
    for method in ("GET", "DELETE"):
        assert client.request(method, "/api/v1/ops/faults").json()["code"] == "faults_disabled"
    operator = rt.keys.create("op", Role.operator)[1]
    r = admin.post("/api/v1/ops/faults", json=body, headers=auth(operator))
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert admin.get("/api/v1/ops/faults", headers=auth(operator)).status_code == 403
    assert rt.faults.list() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"target": "provider:nope", "kind": "error", "duration_s": 10}, "target"),
        ({"target": "database", "kind": "malformed", "duration_s": 10}, "kind"),
        ({"target": "vector_store", "kind": "error"}, "duration_s"),
        ({"target": "vector_store", "kind": "error", "duration_s": 0.5}, "duration_s"),
        ({"target": "vector_store", "kind": "error", "duration_s": 601}, "duration_s"),
        ({"target": "redis", "kind": "slow", "duration_s": 10}, "kind"),  # redis fails or times out, never slow
        ({"target": "safety", "kind": "slow", "duration_s": 10}, "kind"),  # the filter is off or raises, never slow
        ({"target": "vector_store", "kind": "off", "duration_s": 10}, "kind"),  # only the safety filter is "off"
        ({"target": "nosuch", "kind": "error", "duration_s": 10}, "target"),
        ({"target": "latency", "kind": "slow", "duration_s": 10, "params": {"delay_s": 31}}, "params.delay_s"),
        ({"target": "vector_store", "kind": "error", "duration_s": 10, "params": {"delay_s": 1}}, "params.delay_s"),
        ({"target": "cpu", "kind": "slow", "duration_s": 10, "params": {"threads": 9}}, "params.threads"),
        ({"target": "embedding", "kind": "error", "duration_s": 10, "params": {"rate": 0}}, "params.rate"),
    ],
)
def test_a_fault_that_cannot_be_injected_is_a_422_naming_the_field(admin: TestClient, body: dict, field: str) -> None:
    r = admin.post("/api/v1/ops/faults", json=body)
    assert r.status_code == 422 and r.json()["code"] == "validation_error", r.text
    assert r.json()["field"] == field
    assert admin.get("/api/v1/ops/faults").json()["faults"] == []


def test_provider_faults_are_answered_by_extractive_and_audited(
    sample_data_dir: Path, tmp_path: Path, llm: SlowLLM
) -> None:
    rt = _runtime(sample_data_dir, tmp_path, generator="openai", openai={"base_url": llm.url, "timeout_s": 5})
    try:
        with local_client(create_app(runtime=rt), admin_key(rt)) as c:
            healthy = c.post("/api/v1/chat", json={"message": QUESTION}).json()
            assert healthy["answer"] == llm.answer and healthy["degraded"] is False
            asked, hits = llm.requests, _hits("provider:openai")
            for kind, reason in [("error", "unavailable"), ("malformed", "unavailable"), ("refuse", "unavailable")]:
                fault = _inject(c, "provider:openai", kind)
                body = c.post("/api/v1/chat", json={"message": QUESTION}).json()
                assert body["degraded"] is True and body["answer"] != llm.answer and body["sources"], kind
                assert f"openai failed ({reason}); answered by extractive" in body["degraded_reasons"], kind
                assert c.delete(f"/api/v1/ops/faults/{fault['id']}").status_code == 200
            fault = _inject(c, "provider:openai", "timeout", delay_s=0.2)
            body = c.post("/api/v1/chat", json={"message": QUESTION}).json()
            assert "openai failed (timeout); answered by extractive" in body["degraded_reasons"]
            streamed = c.post("/api/v1/chat/stream", json={"message": QUESTION}).text
            done = json.loads(streamed.split("event: done\ndata: ", 1)[1].split("\n", 1)[0])
            assert done["degraded"] is True and done["answer"] != llm.answer
            assert llm.requests == asked  # the provider was never called while a failing fault was on
            assert c.delete(f"/api/v1/ops/faults/{fault['id']}").status_code == 200
            # five failed calls in a row opened the provider's breaker: close it, so the next call is made
            assert c.put("/api/v1/ops/providers/openai/breaker", json={"state": "closed"}).status_code == 200
            failing_hits = _hits("provider:openai") - hits
            # every failing kind acted at least once (the router's retries and its breaker decide how often)
            assert failing_hits >= 4
            fault = _inject(c, "provider:openai", "slow", delay_s=0.1)
            slow = c.post("/api/v1/chat", json={"message": QUESTION}).json()
            assert slow["answer"] == llm.answer and slow["degraded"] is False  # slow, not failed
            assert _hits("provider:openai") - hits == failing_hits + 1
            c.delete("/api/v1/ops/faults")
            after = c.post("/api/v1/chat", json={"message": QUESTION}).json()
            assert after["answer"] == llm.answer and after["degraded"] is False
        audit = _audit(rt)
        assert audit.count(("fault.inject", "ok", "provider:openai")) == 5
        assert audit.count(("fault.clear", "ok", "provider:openai")) == 4 and ("fault.clear", "ok", "all") in audit
    finally:
        rt.close()


def test_a_database_fault_journals_turns_and_they_are_replayed_after_it_is_cleared(
    rt: Runtime, admin: TestClient
) -> None:
    # no key (a key check needs the database), and no lifespan of its own: the admin client's app is running
    anon = TestClient(admin.app, client=LOOPBACK_CLIENT)
    assert anon.post("/api/v1/chat", json={"message": QUESTION}).status_code == 200  # the index is loaded
    fault = _inject(admin, "database", "error")
    r = anon.post("/api/v1/chat", json={"message": QUESTION, "user_id": "u9"})
    assert r.status_code == 200, r.text  # accepted: kept in the journal
    turn = r.json()
    assert turn["degraded"] is True and turn["sources"]
    assert any("database unavailable (OperationalError); turn journaled" in x for x in turn["degraded_reasons"])
    assert len(rt.journal.pending()) == 1
    down = admin.get("/api/v1/ops/incidents")  # any keyed route: the key check fails at the DBAPI
    assert down.status_code == 503 and down.json()["code"] == "dependency_unavailable" and down.headers["retry-after"]
    assert admin.get("/api/v1/ops/faults").json()["faults"][0]["id"] == fault["id"]  # the fault API still works
    assert admin.delete(f"/api/v1/ops/faults/{fault['id']}").status_code == 200
    assert rt.replay_journal() == 1
    msgs = admin.get(f"/api/v1/sessions/{turn['session_id']}/messages", params={"user_id": "u9"}).json()
    assert [m["content"] for m in msgs] == [QUESTION, turn["answer"]]
    assert ("fault.clear", "ok", "database") in _audit(rt)


def test_a_vector_store_fault_degrades_to_bm25_and_expires_by_itself(rt: Runtime, admin: TestClient) -> None:
    fault = _inject(admin, "vector_store", "error")
    assert metric_value(admin, "ragvigil_faults_active", target="vector_store") == 1
    body = admin.post("/api/v1/chat", json={"message": QUESTION}).json()
    assert body["sources"] and body["degraded"] is True  # BM25 still found the answer
    assert any(r.startswith("vector search unavailable: vector store failing") for r in body["degraded_reasons"])
    assert all(s["vector_score"] is None for s in body["sources"])
    assert admin.get("/health").json()["status"] == "degraded"  # the store's own check fails too
    admin.delete(f"/api/v1/ops/faults/{fault['id']}")
    _inject(admin, "vector_store", "error", duration_s=1)
    wait_until(lambda: admin.get("/api/v1/ops/faults").json()["faults"] == [], 15, "the fault to expire")
    wait_until(lambda: ("fault.clear", "expired", "vector_store") in _audit(rt), 15, "the expiry to be audited")
    assert metric_value(admin, "ragvigil_faults_active", target="vector_store") == 0
    again = admin.post("/api/v1/chat", json={"message": QUESTION}).json()
    assert again["degraded"] is False and any(s["vector_score"] is not None for s in again["sources"])


def test_an_embedding_fault_degrades_to_bm25(admin: TestClient) -> None:
    _inject(admin, "embedding", "error")
    body = admin.post("/api/v1/chat", json={"message": "Can I export my notes as a PDF file?"}).json()
    assert body["degraded"] is True and body["sources"]
    assert any(r.startswith("vector search unavailable: embedding failing") for r in body["degraded_reasons"])
    admin.delete("/api/v1/ops/faults")
    again = admin.post("/api/v1/chat", json={"message": "Can I export my notes to PDF?"}).json()
    assert again["degraded"] is False


def test_a_latency_fault_holds_requests_until_it_ends_but_never_the_fault_api(rt: Runtime, admin: TestClient) -> None:
    fault = _inject(admin, "latency", "slow", delay_s=30)
    before = _hits("latency")
    done: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: done.append(admin.get("/health/live")))
    worker.start()
    wait_until(lambda: _hits("latency") > before, 15, "the request to be held")
    assert admin.get("/api/v1/ops/faults").status_code == 200  # answered while /health/live is held
    assert done == [] and worker.is_alive()
    assert admin.delete(f"/api/v1/ops/faults/{fault['id']}").status_code == 200
    worker.join(15)
    assert done and done[0].status_code == 200


def test_a_cpu_fault_runs_bounded_busy_threads_until_cleared(rt: Runtime, admin: TestClient) -> None:
    fault = _inject(admin, "cpu", "slow", threads=2, rate=0.5)
    burners = [t for t in threading.enumerate() if t.name.startswith(f"fault-cpu-{fault['id'][:8]}")]
    assert len(burners) == 2 and all(t.is_alive() for t in burners)
    admin.delete("/api/v1/ops/faults")
    for t in burners:
        t.join(15)
    assert not any(t.is_alive() for t in burners)


def test_production_refuses_to_start_with_fault_injection_unless_allowed(tmp_path: Path) -> None:
    for allowed, refused in ((False, True), (True, False)):
        rt = Runtime(
            make_settings(
                tmp_path / f"p{allowed}", profile="production", faults={"enabled": True, "allow_in_production": allowed}
            )
        )
        try:
            problems = rt.startup_problems()
            assert any("faults.enabled" in f"{p.source} {p.message}" for p in problems) is refused, problems
        finally:
            rt.close()


def test_with_fault_injection_off_nothing_is_wrapped(sample_runtime: Runtime) -> None:
    clients = [getattr(r.generator, "inner", r.generator) for r in sample_runtime.router.routes]
    assert all(type(c).__name__ != "FaultyGenerator" for c in clients)
    assert type(sample_runtime.vectors).__name__ == "FaissVectorStore"
    assert sample_runtime.faults.hit("vector_store") is None


def test_on_a_running_server_a_database_fault_is_journaled_and_replayed_by_itself(
    sample_data_dir: Path, tmp_path: Path
) -> None:
    d = tmp_path / "served"
    shutil.copytree(sample_data_dir, d)
    app = create_app(make_settings(d, faults={"enabled": True}))
    with LiveServer(app) as base, httpx.Client(base_url=base, timeout=30) as http:
        key = auth(read_admin_key(d) or "")  # the first start made it
        assert http.post("/api/v1/chat", json={"message": QUESTION}).status_code == 200
        r = http.post(
            "/api/v1/ops/faults", json={"target": "database", "kind": "refuse", "duration_s": 120}, headers=key
        )
        assert r.status_code == 201, r.text
        turn = http.post("/api/v1/chat", json={"message": QUESTION, "user_id": "u7"}).json()
        assert any("turn journaled" in x for x in turn["degraded_reasons"])
        assert http.delete("/api/v1/ops/faults", headers=key).status_code == 200
        path = f"/api/v1/sessions/{turn['session_id']}/messages"
        msgs = wait_until(  # the replay loop runs every 5 s
            lambda: (r := http.get(path, params={"user_id": "u7"})).status_code == 200 and r.json(),
            60,
            "the journaled turn to be replayed",
        )
        assert [m["content"] for m in msgs] == [QUESTION, turn["answer"]]


def test_a_key_verified_before_a_database_outage_still_chats_and_its_turn_is_journaled(
    rt: Runtime, admin: TestClient
) -> None:
    _, plain = rt.keys.create("alice", Role.client)
    mallory, revoked = rt.keys.create("mallory", Role.client)
    alice = TestClient(admin.app, headers=auth(plain))
    assert alice.post("/api/v1/chat", json={"message": QUESTION}).status_code == 200  # verified: remembered
    gone = TestClient(admin.app, headers=auth(revoked))
    assert gone.post("/api/v1/chat", json={"message": QUESTION}).status_code == 200
    rt.keys.revoke(mallory.id)
    fault = _inject(admin, "database", "error")
    r = alice.post("/api/v1/chat", json={"message": QUESTION, "user_id": "a1"})
    assert r.status_code == 200, r.text  # before: 503 for every keyed caller (the key check needs the database)
    assert any("turn journaled" in x for x in r.json()["degraded_reasons"])
    stranger = TestClient(admin.app, headers=auth("rv_" + "x" * 43))  # never verified here: not let in blind
    assert stranger.post("/api/v1/chat", json={"message": QUESTION}).status_code == 503
    # revoked in this process: never accepted from memory
    assert gone.post("/api/v1/chat", json={"message": QUESTION}).status_code == 503
    admin.delete(f"/api/v1/ops/faults/{fault['id']}")
    assert rt.replay_journal() == 1
    assert gone.post("/api/v1/chat", json={"message": QUESTION}).status_code == 401
