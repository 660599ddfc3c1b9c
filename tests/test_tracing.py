"""Spans for every request and stage, the trace API, the session timeline and OTLP export."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from tests.conftest import local_client

from ragvigil.ops import tracing


def test_trace_contains_every_stage_with_attributes(client: TestClient) -> None:
    r = client.post("/api/v1/chat", json={"message": "How do I export my notes?"}, headers={"X-Request-ID": "trace-1"})
    sid = r.json()["session_id"]
    spans = client.get("/api/v1/traces/trace-1").json()["spans"]
    names = [s["name"] for s in spans]
    assert names[0] == "POST /api/v1/chat"
    assert names[1:] == ["stage.history", "stage.retrieve", "stage.generate", "stage.persist"]
    root = spans[0]
    assert all(s["parent_id"] == root["span_id"] for s in spans[1:])  # context crossed into the worker thread
    by = {s["name"]: s["attributes"] for s in spans}
    assert by["stage.retrieve"]["relevant_hits"] >= 1 and spans[0]["attributes"]["session_id"] == sid
    assert by["stage.generate"]["provider"] == "extractive" and by["stage.generate"]["degraded"] is False
    assert by["stage.persist"]["persisted_to"] == "database"
    assert root["attributes"]["http.status_code"] == 200


def test_unknown_trace_is_404(client: TestClient) -> None:
    r = client.get("/api/v1/traces/never-seen")
    assert r.status_code == 404 and r.json()["code"] == "trace_not_found"


def test_session_timeline_lists_turns_with_stage_timings(client: TestClient) -> None:
    first = client.post("/api/v1/chat", json={"message": "专业版年付多少钱？"}, headers={"X-Request-ID": "tl-1"}).json()
    client.post(
        "/api/v1/chat",
        json={"message": "How do I turn on two-step verification?", "session_id": first["session_id"]},
        headers={"X-Request-ID": "tl-2"},
    )
    tl = client.get(f"/api/v1/sessions/{first['session_id']}/timeline").json()
    assert [t["request_id"] for t in tl["turns"]] == ["tl-1", "tl-2"]
    assert tl["turns"][0]["question"] == "专业版年付多少钱？"
    assert set(tl["turns"][1]["stages_ms"]) == {"history", "retrieve", "generate", "persist"}


def test_otlp_export_reaches_a_collector(client: TestClient) -> None:
    received: list[bytes] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}/v1/traces"
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    try:
        tracing.enable_otlp(endpoint)
        client.post(
            "/api/v1/chat",
            json={"message": "How do I export my notes?"},
            headers={"X-Request-ID": "otlp-1", "traceparent": f"00-{trace_id}-b7ad6b7169203331-01"},
        )
        tracing.flush()
    finally:
        tracing.disable_otlp(endpoint)
        server.shutdown()
    spans = []
    for body in received:
        export = ExportTraceServiceRequest.FromString(body)
        spans += [s for rs in export.resource_spans for ss in rs.scope_spans for s in ss.spans]
    mine = {s.name: s for s in spans if s.trace_id.hex() == trace_id}
    root = mine["POST /api/v1/chat"]
    assert root.parent_span_id.hex() == "b7ad6b7169203331"
    assert any(a.key == "ragvigil.request_id" and a.value.string_value == "otlp-1" for a in root.attributes)
    assert {"stage.history", "stage.retrieve", "stage.generate", "stage.persist"} <= set(mine)
    assert all(mine[n].parent_span_id == root.span_id for n in mine if n.startswith("stage."))
    assert mine["stage.retrieve"].end_time_unix_nano > mine["stage.retrieve"].start_time_unix_nano


def test_instrumentation_switch_turns_spans_and_metrics_off(sample_runtime) -> None:  # type: ignore[no-untyped-def]
    from ragvigil.api.server import create_app
    from ragvigil.ops import instrumentation
    from ragvigil.ops.metrics import REGISTRY

    def chat_count() -> float:
        labels = {"route": "/api/v1/chat", "method": "POST", "status": "200"}
        return REGISTRY.get_sample_value("ragvigil_http_requests_total", labels) or 0.0

    instrumentation.configure(False)
    try:
        with local_client(create_app(runtime=sample_runtime)) as c:
            before = chat_count()
            r = c.post("/api/v1/chat", json={"message": "How do I export my notes?"}, headers={"X-Request-ID": "off-1"})
            assert r.status_code == 200 and r.headers["x-request-id"] == "off-1" and r.json()["sources"]
            assert chat_count() == before
            assert tracing.RECENT.for_request("off-1") is None
    finally:
        instrumentation.configure(True)


def test_instrumentation_can_be_switched_at_run_time_and_the_switch_is_audited(
    client: TestClient, sample_runtime
) -> None:  # type: ignore[no-untyped-def]
    try:
        assert client.put("/api/v1/ops/instrumentation", json={"enabled": False}).json() == {"enabled": False}
        client.post("/api/v1/chat", json={"message": "How do I export my notes?"}, headers={"X-Request-ID": "rt-off"})
        assert client.get("/api/v1/traces/rt-off").status_code == 404
        assert client.put("/api/v1/ops/instrumentation", json={"enabled": True}).json() == {"enabled": True}
        client.post("/api/v1/chat", json={"message": "How do I export my notes?"}, headers={"X-Request-ID": "rt-on"})
        assert client.get("/api/v1/traces/rt-on").status_code == 200
        assert [e.target for e in sample_runtime.audit.query(action="instrumentation.set")] == ["true", "false"]
        assert client.put("/api/v1/ops/instrumentation", json={"enabled": "maybe"}).status_code == 422
    finally:
        from ragvigil.ops import instrumentation

        instrumentation.configure(True)


def test_span_store_evicts_the_oldest_requests() -> None:
    store = tracing.RecentTraces(max_requests=3)
    for i in range(5):
        trace = tracing.RequestTrace(f"r{i}", "req")
        trace.add_child("stage.x", trace.root.start_ns, trace.root.start_ns + 1000, {"n": i}, False)
        store.add(trace)
    assert store.for_request("r0") is None and store.for_request("r1") is None
    assert [s["name"] for s in store.for_request("r4") or []] == ["req", "stage.x"]


def test_a_callers_traceparent_is_continued(client: TestClient) -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    client.post(
        "/api/v1/chat",
        json={"message": "How do I export my notes?"},
        headers={"X-Request-ID": "tp-1", "traceparent": parent},
    )
    spans = client.get("/api/v1/traces/tp-1").json()["spans"]
    assert spans[0]["parent_id"] == "00f067aa0ba902b7"
    assert tracing.RECENT.trace_id("tp-1") == "4bf92f3577b34da6a3ce929d0e0e4736"
    client.post("/api/v1/chat", json={"message": "hi"}, headers={"X-Request-ID": "tp-2", "traceparent": "garbage"})
    assert client.get("/api/v1/traces/tp-2").json()["spans"][0]["parent_id"] is None
