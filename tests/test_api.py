from __future__ import annotations

import json

import httpx
import pytest
from fastapi.testclient import TestClient
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.ops.access import Role
from tests.conftest import LiveServer, local_client


def _error(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["code"] == code and body["message"]
    return body


def test_chat_turns_persist_and_come_back_in_order(client: TestClient) -> None:
    r1 = client.post("/api/v1/chat", json={"message": "专业版年付多少钱？", "user_id": "u1"})
    assert r1.status_code == 200
    body = r1.json()
    assert "¥268" in body["answer"] and body["sources"] and body["degraded"] is False
    sid = body["session_id"]
    follow = {"session_id": sid, "user_id": "u1"}  # a session is its opener's: same caller, same user_id
    r2 = client.post("/api/v1/chat", json={"message": "How do I turn on two-step verification?", **follow})
    r3 = client.post("/api/v1/chat", json={"message": "明天会下雨吗？", **follow})
    assert r2.status_code == r3.status_code == 200
    msgs = client.get(f"/api/v1/sessions/{sid}/messages", params={"user_id": "u1"}).json()
    assert [m["role"] for m in msgs] == ["user", "assistant"] * 3
    assert [m["content"] for m in msgs[::2]] == [
        "专业版年付多少钱？",
        "How do I turn on two-step verification?",
        "明天会下雨吗？",
    ]
    assert msgs[1]["id"] == body["message_id"] and msgs[1]["sources"][0]["n"] == 1
    recorded_ms = msgs[1]["latency_ms"]  # stored with the answer (its value is not asserted)
    assert recorded_ms is not None and msgs[5]["sources"] == []


def test_request_id_is_made_by_the_server_whatever_the_caller_sent(client: TestClient) -> None:
    r = client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert len(r.headers["x-request-id"]) == 32 and r.headers["x-request-id"] != "abc-123"
    generated = client.get("/health/live").headers["x-request-id"]
    assert len(generated) == 32 and generated != r.headers["x-request-id"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"message": ""}, "message"),
        ({"message": "   "}, "message"),
        ({}, "message"),
        ({"message": "hi", "kb": "../etc"}, "kb"),
        ({"message": "hi", "session_id": "bad id!"}, "session_id"),
        ({"message": 42}, "message"),
    ],
)
def test_invalid_chat_requests_name_the_field(client: TestClient, payload: dict, field: str) -> None:
    body = _error(client.post("/api/v1/chat", json=payload), 422, "validation_error")
    assert body["field"] == field


def test_malformed_json_is_a_422_json_error(client: TestClient) -> None:
    r = client.post("/api/v1/chat", content=b"{not json", headers={"content-type": "application/json"})
    _error(r, 422, "validation_error")


def test_too_long_message_is_refused(client: TestClient) -> None:
    body = _error(client.post("/api/v1/chat", json={"message": "x" * 5000}), 422, "validation_error")
    assert body["field"] == "message"


def test_unknown_things_are_404(client: TestClient) -> None:
    _error(client.get("/api/v1/sessions/nope/messages"), 404, "session_not_found")
    _error(client.post("/api/v1/chat", json={"message": "hi", "session_id": "nope"}), 404, "session_not_found")
    _error(client.get("/api/v1/kb/missing/documents"), 404, "kb_not_found")
    _error(client.get("/api/v1/kb/default/documents/nope"), 404, "document_not_found")
    _error(client.delete("/api/v1/kb/default/documents/nope"), 404, "document_not_found")
    _error(client.get("/no/such/route"), 404, "not_found")
    _error(client.put("/api/v1/chat", json={}), 405, "method_not_allowed")


def test_oversized_body_is_413(sample_runtime: Runtime) -> None:
    sample_runtime.settings.max_body_bytes = 2048
    with local_client(create_app(runtime=sample_runtime)) as c:
        _error(c.post("/api/v1/chat", json={"message": "y" * 4096}), 413, "payload_too_large")
        files = {"file": ("big.md", b"# big\n" + b"z" * 8192, "text/markdown")}
        _error(c.post("/api/v1/kb/default/documents", files=files), 413, "payload_too_large")


def test_upload_list_and_delete_documents(client: TestClient) -> None:
    doc = "# 星河会员\n星河会员的年费是 388 元。\n\nThe Galaxy membership costs 388 yuan per year."
    files = [
        ("file", ("galaxy.md", doc.encode(), "text/markdown")),
        ("file", ("empty.txt", b"", "text/plain")),
    ]
    r = client.post("/api/v1/kb/smoke/documents", files=files)
    assert r.status_code == 201
    results = {x["source"]: x for x in r.json()}
    assert results["galaxy.md"]["outcome"] == "created" and results["empty.txt"]["outcome"] == "failed"
    listed = {d["source"]: d for d in client.get("/api/v1/kb/smoke/documents").json()}
    assert listed["empty.txt"]["status"] == "failed" and listed["empty.txt"]["error"] == "empty file"
    assert listed["galaxy.md"]["status"] in ("searchable", "ready")
    for q in ("星河会员的年费是多少？", "How much is the Galaxy membership?"):
        ans = client.post("/api/v1/chat", json={"message": q, "kb": "smoke"}).json()
        assert "388" in ans["answer"] and ans["sources"], ans
    again = client.post("/api/v1/kb/smoke/documents", files=[files[0]]).json()
    assert again[0]["outcome"] == "unchanged"
    doc_id = results["galaxy.md"]["document_id"]
    assert client.delete(f"/api/v1/kb/smoke/documents/{doc_id}").status_code == 204
    gone = client.post("/api/v1/chat", json={"message": "星河会员的年费是多少？", "kb": "smoke"}).json()
    assert gone["sources"] == [] and "388" not in gone["answer"]


def test_mojibake_upload_shows_quality_warning(client: TestClient) -> None:
    damaged = "# 退款\n年付订单可以在 14 天内申请退款。".encode().decode("cp1252", errors="replace")
    r = client.post("/api/v1/kb/enc/documents", files={"file": ("bad.md", damaged.encode(), "text/markdown")})
    assert r.status_code == 201
    doc = client.get("/api/v1/kb/enc/documents").json()[0]
    assert any("encoding damage remains" in w for w in doc["warnings"])


def test_search_endpoint(client: TestClient) -> None:
    r = client.get("/api/v1/kb/default/search", params={"q": "如何开启两步验证", "k": 3})
    hits = r.json()["hits"]
    assert len(hits) == 3 and hits[0]["source"].endswith("zh-two-factor-auth.md")
    assert {"title", "source", "anchor", "bm25_score", "vector_score", "score"} <= hits[0].keys()
    _error(client.get("/api/v1/kb/default/search", params={"q": "x", "mode": "magic"}), 422, "validation_error")


def test_sse_stream_delivers_meta_deltas_and_done(client: TestClient) -> None:
    with client.stream("POST", "/api/v1/chat/stream", json={"message": "How many API tokens can I create?"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = []
        for block in r.read().decode().split("\n\n"):
            if block.strip():
                name, data = block.split("\n", 1)
                events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    names = [e[0] for e in events]
    assert names[0] == "meta" and names[-1] == "done" and names.count("delta") >= 2
    text = "".join(d["text"] for n, d in events if n == "delta")
    done = events[-1][1]
    assert text == done["answer"] and done["sources"]
    msgs = client.get(f"/api/v1/sessions/{done['session_id']}/messages").json()
    assert msgs[1]["content"] == text


def test_metrics_move_after_traffic(client: TestClient) -> None:
    client.post("/api/v1/chat", json={"message": "How do I export notes?"})
    client.post("/api/v1/chat", json={"message": ""})
    client.get("/api/v1/sessions/unknown-session/messages")
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    reqs = {
        (s.labels["route"], s.labels["status"]): s.value
        for s in families["ragvigil_http_requests"].samples
        if s.name == "ragvigil_http_requests_total"
    }
    assert reqs[("/api/v1/chat", "200")] >= 1 and reqs[("/api/v1/chat", "422")] >= 1
    # the route label is the template, never the raw path
    assert ("/api/v1/sessions/{session_id}/messages", "404") in reqs
    assert not any("unknown-session" in route for route, _ in reqs)
    stages = {
        s.labels["stage"]: s.value
        for s in families["ragvigil_stage_duration_seconds"].samples
        if s.name == "ragvigil_stage_duration_seconds_count"
    }
    assert all(stages.get(st, 0) >= 1 for st in ("retrieve", "generate", "persist"))
    dur = [s for s in families["ragvigil_http_request_duration_seconds"].samples if s.name.endswith("_count")]
    assert any(s.labels["route"] == "/api/v1/chat" and s.value >= 1 for s in dur)


def test_health_probes(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "alive"}
    r = client.get("/health/ready")
    assert r.status_code == 200
    assert set(r.json()["checks"]) == {"database", "vector_store", "embedding", "generator", "disk"}


def test_ready_is_503_when_the_database_is_gone(sample_runtime: Runtime) -> None:
    with local_client(create_app(runtime=sample_runtime)) as c:
        sample_runtime.db.engine.dispose()
        db_file = sample_runtime.settings.data_dir / "ragvigil.db"
        db_file.unlink()
        db_file.mkdir()  # the path now cannot be opened as a database
        r = c.get("/health/ready")
        assert r.status_code == 503 and r.json()["checks"]["database"]["status"] == "failing"
        assert c.get("/health/live").status_code == 200


def test_openai_client_against_chat_completions(sample_runtime: Runtime) -> None:
    with LiveServer(create_app(runtime=sample_runtime)) as base:
        # the client always sends a key, and a presented key is always checked: a made-up one is refused
        refused = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        with pytest.raises(Exception) as bad_key:
            refused.models.list()
        assert getattr(bad_key.value, "status_code", None) == 401
        oa = OpenAI(base_url=f"{base}/v1", api_key=sample_runtime.keys.create("app", Role.client)[1])
        assert [m.id for m in oa.models.list()] == ["ragvigil"]
        msgs = [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "How many API requests per minute are allowed?"},
        ]
        done = oa.chat.completions.create(model="ragvigil", messages=msgs)
        assert "120" in done.choices[0].message.content and done.choices[0].finish_reason == "stop"
        chunks = list(oa.chat.completions.create(model="ragvigil", messages=msgs, stream=True))
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == done.choices[0].message.content
        assert chunks[-1].choices[0].finish_reason == "stop"
        with pytest.raises(Exception) as exc:
            oa.chat.completions.create(model="ragvigil", messages=[{"role": "system", "content": "x"}])
        assert getattr(exc.value, "status_code", None) == 422


def test_json_log_lines_carry_request_and_session_ids(client: TestClient) -> None:
    import io

    from ragvigil.ops.logging import configure_logging, reset_logging

    stream = io.StringIO()
    configure_logging("INFO", None, stream=stream, flush_interval=0.05)  # as the server: lines written in batches
    try:
        r = client.post("/api/v1/chat", json={"message": "How do I export notes?"}, headers={"X-Request-ID": "req-42"})
    finally:
        reset_logging()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [x for x in lines if x["event"] == "http_request" and x["route"] == "/api/v1/chat"]
    assert access and access[-1]["request_id"] == r.headers["x-request-id"]
    assert access[-1]["client_request_id"] == "req-42"
    assert access[-1]["session_id"] == r.json()["session_id"] and access[-1]["status"] == 200
    assert {"ts", "level", "logger", "user_id"} <= access[-1].keys()


def test_log_lines_are_redacted(client: TestClient) -> None:
    import io
    import logging

    from ragvigil.ops.logging import configure_logging, reset_logging

    stream = io.StringIO()
    configure_logging("INFO", None, stream=stream)
    try:
        client.post("/api/v1/chat", json={"message": "hi", "user_id": "alice@example.com"})
        logging.getLogger("ragvigil.test").warning("user 13812345678 sent key sk-abcdefghijklmnopqrstuv")
    finally:
        reset_logging()
    text = stream.getvalue()
    assert "alice@example.com" not in text and "13812345678" not in text and "sk-abcdefghij" not in text
    assert "[EMAIL]" in text and "[PHONE]" in text
