"""``POST /api/v1/analyze``: the analysis a turn would get, without a turn: nothing stored, the text
bounded (413 for the body, 422 for the text), the viewer role in staging and production."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.ops.access import Role
from ragvigil.storage.models import Message
from tests.conftest import LOOPBACK_CLIENT, auth, make_settings
from tests.understand_standins import CountingEmbedder, understand_with_standins


def _messages(rt: Runtime) -> int:
    with rt.db.session() as s:
        return s.scalar(select(func.count()).select_from(Message)) or 0


def test_analyze_returns_the_turns_analysis_and_stores_nothing(
    anon_client: TestClient, sample_runtime: Runtime
) -> None:
    _, emotion, _ = understand_with_standins(sample_runtime)
    counting = CountingEmbedder(sample_runtime.embedder.inner)
    sample_runtime.embedder.inner = counting
    before = _messages(sample_runtime)
    r = anon_client.post("/api/v1/analyze", json={"text": "我好难过，不想活了"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["analysis"] == {
        "safety": {"category": "self_harm", "severity": "critical"},
        "emotion": {"label": "sadness", "polarity": "very_negative", "score": -0.9},
        "intent": {"name": "product_inquiry", "confidence": 0.62},
    }
    assert body["language"] == "zh" and body["embedded"] is True and set(body["ms"]) >= {"safety", "emotion", "intent"}
    assert len(counting.calls) == 1 and emotion.vectors[0].shape == (384,)
    assert _messages(sample_runtime) == before  # no turn, nothing stored
    hello = anon_client.post("/api/v1/analyze", json={"text": "hello"}).json()
    assert hello["analysis"]["intent"]["name"] == "greeting" and hello["analysis"]["safety"]["category"] is None


def test_analyze_without_checkers_says_so_with_null_parts(anon_client: TestClient, sample_runtime: Runtime) -> None:
    sample_runtime.safety = sample_runtime.emotion = sample_runtime.intents = None  # none configured
    body = anon_client.post("/api/v1/analyze", json={"text": "hello"}).json()
    assert body["analysis"] == {"safety": {"category": None, "severity": "none"}, "emotion": None, "intent": None}
    assert body["embedded"] is False


def test_analyze_bounds_its_input_with_json_errors(sample_data_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "data"
    shutil.copytree(sample_data_dir, d)
    rt = Runtime(make_settings(d, max_message_chars=50, max_body_bytes=4096))
    try:
        understand_with_standins(rt)
        with TestClient(create_app(runtime=rt), client=LOOPBACK_CLIENT) as c:
            long = c.post("/api/v1/analyze", json={"text": "x" * 51})
            assert long.status_code == 422 and long.json()["code"] == "validation_error", long.text
            assert "50 characters" in long.json()["message"]
            huge = c.post("/api/v1/analyze", json={"text": "x" * 5000})
            assert huge.status_code == 413 and set(huge.json()) >= {"code", "message"}
            for bad in ({"text": "   "}, {"text": ""}, {}, {"text": "a\u0000b"}):
                r = c.post("/api/v1/analyze", json=bad)
                assert r.status_code == 422 and set(r.json()) >= {"code", "message"}, (bad, r.text)
            assert c.post("/api/v1/analyze", json={"text": "x" * 50}).status_code == 200
    finally:
        rt.close()


def test_a_failing_safety_check_is_a_503_with_retry_after(anon_client: TestClient, sample_runtime: Runtime) -> None:
    understand_with_standins(sample_runtime, broken=True)
    r = anon_client.post("/api/v1/analyze", json={"text": "hello"})
    assert r.status_code == 503 and r.headers["Retry-After"] and r.json()["code"] == "dependency_unavailable"


@pytest.mark.parametrize("profile", ["staging", "production"])
def test_analyze_needs_the_viewer_role(sample_data_dir: Path, tmp_path: Path, profile: str) -> None:
    d = tmp_path / "data"
    shutil.copytree(sample_data_dir, d)
    rt = Runtime(make_settings(d, profile=profile))
    try:
        keys = {
            role: rt.keys.create(role.name, role)[1] for role in (Role.client, Role.viewer, Role.operator, Role.admin)
        }
        with TestClient(create_app(runtime=rt), client=LOOPBACK_CLIENT) as c:
            assert c.post("/api/v1/analyze", json={"text": "hello"}).status_code == 401
            client = c.post("/api/v1/analyze", json={"text": "hello"}, headers=auth(keys[Role.client]))
            assert client.status_code == 403 and client.json()["code"] == "forbidden"
            for role in (Role.viewer, Role.operator):
                r = c.post("/api/v1/analyze", json={"text": "hello"}, headers=auth(keys[role]))
                assert r.status_code == 200, (role, r.text)
    finally:
        rt.close()
