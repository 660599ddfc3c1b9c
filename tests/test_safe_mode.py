"""Safe mode: switched through the API (audited), answers every message with the safe text in the
message's language, streamed or not, while the turns are still stored; it survives a restart."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

import tests.test_alert_export as alert_export
from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.config import SAFE_RESPONSE_EN, SAFE_RESPONSE_ZH
from ragvigil.ops.access import Role
from tests.conftest import admin_key, auth, local_client, make_settings, sse_events


def _gauge(client: TestClient, name: str) -> float:
    for fam in text_string_to_metric_families(client.get("/metrics").text):
        for s in fam.samples:
            if s.name == name:
                return s.value
    raise AssertionError(f"{name} not exported")


def test_safe_mode_on_answers_the_safe_text_in_zh_and_en_and_keeps_every_turn(
    client: TestClient, sample_runtime: Runtime
) -> None:
    r = client.put("/api/v1/ops/safe-mode", json={"active": True, "reason": "safety filter down"})
    assert r.status_code == 200, r.text
    assert r.json()["active"] is True and r.json()["reason"] == "safety filter down" and r.json()["persisted"]
    assert client.get("/api/v1/ops/safe-mode").json()["active"] is True
    assert _gauge(client, "ragvigil_safe_mode_active") == 1

    en = client.post("/api/v1/chat", json={"message": "How do I export my notes?", "user_id": "u1"}).json()
    assert en["answer"] == SAFE_RESPONSE_EN and en["sources"] == []
    assert en["degraded"] is True and "safe mode" in en["degraded_reasons"]
    zh = client.post(
        "/api/v1/chat", json={"message": "专业版年付多少钱？", "session_id": en["session_id"], "user_id": "u1"}
    )
    assert zh.status_code == 200 and zh.json()["answer"] == SAFE_RESPONSE_ZH
    compat = client.post("/v1/chat/completions", json={"model": "x", "messages": [{"role": "user", "content": "hi"}]})
    assert compat.json()["choices"][0]["message"]["content"] == SAFE_RESPONSE_EN

    msgs = client.get(f"/api/v1/sessions/{en['session_id']}/messages", params={"user_id": "u1"}).json()
    assert [(m["role"], m["content"]) for m in msgs] == [
        ("user", "How do I export my notes?"),
        ("assistant", SAFE_RESPONSE_EN),
        ("user", "专业版年付多少钱？"),
        ("assistant", SAFE_RESPONSE_ZH),
    ]
    assert msgs[1]["degraded"] is True

    off = client.put("/api/v1/ops/safe-mode", json={"active": False, "reason": "filter back"})
    assert off.status_code == 200 and off.json()["active"] is False
    assert _gauge(client, "ragvigil_safe_mode_active") == 0
    normal = client.post("/api/v1/chat", json={"message": "专业版年付多少钱？"}).json()
    assert "¥268" in normal["answer"] and normal["degraded"] is False

    actions = [(e.action, e.result, e.detail.get("reason")) for e in sample_runtime.audit.query()]
    assert ("safe_mode.enter", "ok", "safety filter down") in actions
    assert ("safe_mode.leave", "ok", "filter back") in actions


def test_a_streamed_turn_in_safe_mode_streams_the_safe_text_and_is_stored(client: TestClient) -> None:
    client.put("/api/v1/ops/safe-mode", json={"active": True, "reason": "drill"})
    r = client.post("/api/v1/chat/stream", json={"message": "怎么导出笔记？"})
    events = sse_events(r.text)
    assert "".join(d["text"] for k, d in events if k == "delta") == SAFE_RESPONSE_ZH
    done = next(d for k, d in events if k == "done")
    assert done["answer"] == SAFE_RESPONSE_ZH and done["degraded"] is True
    msgs = client.get(f"/api/v1/sessions/{done['session_id']}/messages").json()
    assert [m["content"] for m in msgs] == ["怎么导出笔记？", SAFE_RESPONSE_ZH]


def test_safe_mode_survives_a_restart_and_an_unreadable_state_starts_in_safe_mode(tmp_path: Path) -> None:
    d = tmp_path / "data"
    rt = Runtime(make_settings(d))
    rt.safe_mode.enter("provider answering nonsense", "alice")
    rt.close()
    rt = Runtime(make_settings(d))
    try:
        state = rt.safe_mode.status()
        assert state["active"] is True and state["reason"] == "provider answering nonsense" and state["by"] == "alice"
        rt.safe_mode.leave("bob")
    finally:
        rt.close()
    rt = Runtime(make_settings(d))
    assert rt.safe_mode.active is False
    rt.close()
    (d / "safe_mode.json").write_text("{not json")
    rt = Runtime(make_settings(d))
    try:
        assert rt.safe_mode.active is True and "unreadable" in rt.safe_mode.status()["reason"]
    finally:
        rt.close()


def test_switching_needs_an_operator_and_a_reason(sample_runtime: Runtime) -> None:
    viewer = sample_runtime.keys.create("viewer", Role.viewer)[1]
    with local_client(create_app(runtime=sample_runtime)) as c:
        assert c.get("/api/v1/ops/safe-mode").status_code == 401
        assert c.get("/api/v1/ops/safe-mode", headers=auth(viewer)).json()["active"] is False
        r = c.put("/api/v1/ops/safe-mode", json={"active": True, "reason": "x"}, headers=auth(viewer))
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
        r = c.put(
            "/api/v1/ops/safe-mode", json={"active": True, "reason": "  "}, headers=auth(admin_key(sample_runtime))
        )
        assert r.status_code == 422 and r.json()["field"] == "reason"
        r = c.put("/api/v1/ops/safe-mode", json={"active": "yes"}, headers=auth(admin_key(sample_runtime)))
        assert r.status_code == 422 and r.json()["field"] == "active"
        r = c.put(
            "/api/v1/ops/safe-mode", json={"active": True, "reason": "a\x00b"}, headers=auth(admin_key(sample_runtime))
        )
        assert r.status_code == 422 and r.json()["field"] == "reason"  # never stored half-way (audit, state)
    assert sample_runtime.safe_mode.active is False


def test_the_safe_responses_are_configurable(sample_data_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "data"
    shutil.copytree(sample_data_dir, d)
    rt = Runtime(make_settings(d, safe_mode={"response_en": "Limited today: call 400-123-4567."}))
    try:
        rt.safe_mode.enter("drill", "test")
        with local_client(create_app(runtime=rt)) as c:
            assert c.post("/api/v1/chat", json={"message": "hello"}).json()["answer"] == (
                "Limited today: call 400-123-4567."
            )
            assert c.post("/api/v1/chat", json={"message": "你好"}).json()["answer"] == SAFE_RESPONSE_ZH
    finally:
        rt.close()


@pytest.mark.parametrize(
    "scenario",
    [
        {
            "name": "safe mode left on fires SafeModeActive, leaving it resolves it",
            "series": {"ragvigil_safe_mode_active": "0 0 1x8 0x4"},
            "checks": ["15s", "45s", "2m", "3m"],
            "must_fire": {("45s", "SafeModeActive"), ("2m", "SafeModeActive")},
        }
    ],
    ids=lambda s: s["name"],
)
def test_safe_mode_has_an_alert_that_prometheus_fires_too(scenario: dict, tmp_path: Path) -> None:
    alert_export.test_prometheus_fires_what_the_builtin_engine_fires(scenario, tmp_path)
