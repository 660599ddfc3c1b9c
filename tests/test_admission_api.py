"""Rate limits, the admission state and the feature switches through the HTTP API (in process)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.chat.pipeline import Retrieve, Turn
from ragvigil.ops.access import Role
from ragvigil.ops.alerts.incidents import AlertNotice
from tests.conftest import admin_key, auth, local_client, make_settings

QUESTION = {"message": "How do I export my notes?"}


@pytest.fixture
def limited(sample_data_dir: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Runtime]:
    d = tmp_path / "data"
    shutil.copytree(sample_data_dir, d)
    limits = getattr(request, "param", {"per_key": "2/minute", "per_user": None})
    rt = Runtime(make_settings(d, admission=limits, alerts={"enabled": False}))
    yield rt
    rt.close()


def test_a_key_over_its_limit_gets_429_with_retry_after_and_ratelimit_headers(limited: Runtime) -> None:
    key = limited.keys.create("app", Role.client)[1]
    with local_client(create_app(runtime=limited), key) as c:
        first = c.post("/api/v1/chat", json=QUESTION)
        assert first.status_code == 200
        assert first.headers["RateLimit-Limit"] == "2" and first.headers["RateLimit-Remaining"] == "1"
        assert first.headers["X-RateLimit-Limit"] == "2" and first.headers["RateLimit-Policy"] == "2;w=60"
        assert c.post("/api/v1/chat", json=QUESTION).status_code == 200
        refused = c.post("/api/v1/chat", json=QUESTION)
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.headers["RateLimit-Remaining"] == "0" and refused.headers["X-RateLimit-Remaining"] == "0"
        assert int(refused.headers["X-RateLimit-Reset"]) > datetime.now(UTC).timestamp()
        openai = c.post("/v1/chat/completions", json={"model": "x", "messages": [{"role": "user", "content": "hi"}]})
        assert openai.status_code == 429 and openai.json()["error"]["type"] == "rate_limit_error"
        # probes, metrics and ops routes are never limited: an operator reaches them during an overload
        admin = auth(admin_key(limited))
        for _ in range(5):
            assert c.get("/health/live").status_code == 200
            assert c.get("/metrics").status_code == 200
            state = c.get("/api/v1/ops/admission", headers=admin)
            assert state.status_code == 200
        metrics = c.get("/metrics").text
    assert state.json()["rate_limited"] == {"key": 2}
    assert 'ragvigil_admission_rate_limited_total{scope="key"} 2.0' in metrics


@pytest.mark.parametrize("limited", [{"per_key": None, "per_user": "1/minute"}], indirect=True)
def test_each_user_of_a_key_has_its_own_limit(limited: Runtime) -> None:
    key = limited.keys.create("app", Role.client)[1]
    with local_client(create_app(runtime=limited), key) as c:
        assert c.post("/api/v1/chat", json={**QUESTION, "user_id": "u1"}).status_code == 200
        again = c.post("/api/v1/chat", json={**QUESTION, "user_id": "u1"})
        assert again.status_code == 429 and "this user" in again.json()["message"]
        assert c.post("/api/v1/chat", json={**QUESTION, "user_id": "u2"}).status_code == 200


def test_an_operator_sheds_and_restores_a_feature_audited(client: TestClient, sample_runtime: Runtime) -> None:
    r = client.put("/api/v1/ops/features/contextual_search", json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False and r.json()["by"].startswith("operator:")
    assert not sample_runtime.features.enabled("contextual_search")
    state = client.get("/api/v1/ops/admission").json()
    assert {f["name"]: f["enabled"] for f in state["features"]}["contextual_search"] is False
    assert client.put("/api/v1/ops/features/contextual_search", json={"enabled": True}).json()["enabled"] is True
    assert client.put("/api/v1/ops/features/nope", json={"enabled": True}).json()["code"] == "feature_not_found"
    assert client.put("/api/v1/ops/features/stream_extras", json={"enabled": "no"}).status_code == 422
    audit = sample_runtime.audit.query(action="features.set")
    assert [(a.target, a.detail["enabled"]) for a in audit] == [
        ("contextual_search", True),
        ("contextual_search", False),
    ]


class CountingRetriever:
    """The real retriever, counting its searches."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.searches = inner, 0
        self.tokenizer = inner.tokenizer

    def search(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.searches += 1
        return self.inner.search(*args, **kwargs)


def test_a_shed_contextual_search_skips_the_follow_up_search(sample_runtime: Runtime) -> None:
    counting = CountingRetriever(sample_runtime.retriever)
    stage = Retrieve(counting, features=sample_runtime.features)  # type: ignore[arg-type]

    def searches() -> int:
        counting.searches = 0
        stage(Turn(message="and to PDF?", kb="default", history=[("user", "How do I export my notes?")]))
        return counting.searches

    assert searches() == 2  # a short follow-up is searched again with the previous question
    sample_runtime.features.shed("contextual_search", "load", "admission")
    assert searches() == 1


def test_a_feature_switch_is_an_event_on_the_open_incidents_timeline(sample_runtime: Runtime) -> None:
    labels = {"alertname": "LoadShedding", "severity": "P2"}
    notice = AlertNotice(labels, {"summary": "shedding"}, "firing", datetime.now(UTC), None)
    [incident_id] = sample_runtime.incidents.record([notice], '{}:{alertname="LoadShedding"}')
    sample_runtime.features.shed("stream_extras", "load: 3 queued", "admission")
    sample_runtime.features.restore("stream_extras", "admission", "load fell")
    timeline = sample_runtime.features._observers[0]
    timeline.flush()  # type: ignore[attr-defined]
    events = [e for e in sample_runtime.incidents.get(incident_id)["timeline"] if e["kind"].startswith("feature_")]
    assert [(e["kind"], e["actor"], e["detail"]["feature"]) for e in events] == [
        ("feature_shed", "admission", "stream_extras"),
        ("feature_restored", "admission", "stream_extras"),
    ]
    assert events[0]["detail"]["reason"] == "load: 3 queued"
