"""Spans for every request and stage, the trace API, the session timeline and OTLP export."""

from __future__ import annotations

import io
import json
import shutil
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.ops import semconv, tracing
from ragvigil.ops.access import Role
from ragvigil.ops.message_log import new_key
from tests.conftest import CHAT_STAGES, local_client, make_settings

CHAT = {"message": "How do I export my notes?"}


def _rid(response: Any) -> str:
    """The server-made request id of a response: what its trace is found by."""
    return response.headers["x-request-id"]


@pytest.fixture
def collector() -> Iterator[Callable[[], list[Span]]]:
    """A real OTLP/HTTP endpoint on 127.0.0.1 that the exporter posts to; yields "flush and decode"."""
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

    def spans() -> list[Span]:
        tracing.flush()
        out: list[Span] = []
        for body in received:
            export = ExportTraceServiceRequest.FromString(body)
            out += [s for rs in export.resource_spans for ss in rs.scope_spans for s in ss.spans]
        return out

    tracing.enable_otlp(endpoint)
    try:
        yield spans
    finally:
        tracing.disable_otlp(endpoint)
        server.shutdown()


def _attrs(span: Span) -> dict[str, Any]:
    """A received span's attributes as plain values."""
    out: dict[str, Any] = {}
    for a in span.attributes:
        kind = a.value.WhichOneof("value")
        out[a.key] = getattr(a.value, kind) if kind else None
    return out


def _received_request(spans: list[Span], request_id: str) -> dict[str, Span]:
    root = next(s for s in spans if _attrs(s).get("ragvigil.request_id") == request_id)
    mine = [s for s in spans if s.trace_id == root.trace_id and (s is root or s.parent_span_id == root.span_id)]
    return {"root": root} | {s.name: s for s in mine if s is not root}


def test_trace_contains_every_stage_with_attributes(client: TestClient) -> None:
    r = client.post("/api/v1/chat", json=CHAT)
    sid = r.json()["session_id"]
    spans = client.get(f"/api/v1/traces/{_rid(r)}").json()["spans"]
    names = [s["name"] for s in spans]
    assert names[0] == "POST /api/v1/chat"
    assert names[1:] == [f"stage.{name}" for name in CHAT_STAGES]
    root = spans[0]
    assert all(s["parent_id"] == root["span_id"] for s in spans[1:])  # context crossed into the worker thread
    assert root["kind"] == "server" and {s["kind"] for s in spans[1:]} == {"internal"}
    by = {s["name"]: s["attributes"] for s in spans}
    assert by["stage.retrieve"]["ragvigil.retrieval.relevant_hits"] >= 1
    assert root["attributes"]["session.id"] == sid and root["attributes"]["ragvigil.request_id"] == _rid(r)
    assert by["stage.generate"][semconv.GENAI_PROVIDER] == "extractive"
    assert by["stage.generate"]["ragvigil.degraded"] is False
    assert by["stage.persist"]["ragvigil.persisted_to"] == "database"
    assert root["attributes"]["http.response.status_code"] == 200 and "http.status_code" not in root["attributes"]


def test_unknown_trace_is_404(client: TestClient) -> None:
    r = client.get("/api/v1/traces/never-seen")
    assert r.status_code == 404 and r.json()["code"] == "trace_not_found"
    too_long = client.get("/api/v1/traces/" + "x" * 65)
    assert too_long.status_code == 422 and too_long.json()["field"] == "request_id"


def test_session_timeline_lists_turns_with_stage_timings(client: TestClient) -> None:
    first_r = client.post("/api/v1/chat", json={"message": "专业版年付多少钱？"}, headers={"X-Request-ID": "tl-1"})
    first = first_r.json()
    second_r = client.post(
        "/api/v1/chat",
        json={"message": "How do I turn on two-step verification?", "session_id": first["session_id"]},
        headers={"X-Request-ID": "tl-2"},
    )
    tl = client.get(f"/api/v1/sessions/{first['session_id']}/timeline").json()
    assert [t["request_id"] for t in tl["turns"]] == [_rid(first_r), _rid(second_r)]  # the server's ids
    assert tl["turns"][0]["question"] == "专业版年付多少钱？"
    assert set(tl["turns"][1]["stages_ms"]) == set(CHAT_STAGES)


def test_a_reused_x_request_id_never_shares_a_trace(sample_data_dir: Path, tmp_path: Path) -> None:
    """Alice and Bob send the same X-Request-ID: two traces, each readable by its own caller only."""
    d = tmp_path / "data"
    shutil.copytree(sample_data_dir, d)
    rt = Runtime(make_settings(d, profile="staging"))
    keys = {name: rt.keys.create(name, role)[1] for name, role in [("alice", Role.viewer), ("bob", Role.viewer)]}
    keys["ops"] = rt.keys.create("ops", Role.operator)[1]
    try:
        with local_client(create_app(runtime=rt)) as c:

            def as_(who: str, **headers: str) -> dict[str, str]:
                return {"Authorization": f"Bearer {keys[who]}", **headers}

            alice = c.post("/api/v1/chat", json=CHAT, headers=as_("alice", **{"X-Request-ID": "shared-1"}))
            bob = c.post(
                "/api/v1/chat",
                json={"message": "专业版年付多少钱？"},
                headers=as_("bob", **{"X-Request-ID": "shared-1"}),
            )
            assert _rid(alice) != _rid(bob) and "shared-1" not in (_rid(alice), _rid(bob))

            mine = c.get(f"/api/v1/traces/{_rid(alice)}", headers=as_("alice"))
            assert mine.status_code == 200
            body = mine.json()
            assert body["request_id"] == _rid(alice) and body["client_request_id"] == "shared-1"
            assert body["spans"][0]["attributes"]["session.id"] == alice.json()["session_id"]  # not Bob's turn
            assert body["spans"][0]["attributes"]["ragvigil.client_request_id"] == "shared-1"
            # her session's timeline finds her trace, not Bob's (it looks traces up by the stored request id)
            [turn] = c.get(f"/api/v1/sessions/{alice.json()['session_id']}/timeline", headers=as_("alice")).json()[
                "turns"
            ]
            stages = {s["name"].removeprefix("stage."): s["duration_ms"] for s in body["spans"][1:]}
            assert turn["request_id"] == _rid(alice) and turn["stages_ms"] == stages

            # Bob cannot read Alice's trace, nor learn that it exists: the same 404 as an unknown id
            theirs = c.get(f"/api/v1/traces/{_rid(alice)}", headers=as_("bob"))
            unknown = c.get("/api/v1/traces/0123456789abcdef0123456789abcdef", headers=as_("bob"))
            assert theirs.status_code == unknown.status_code == 404
            assert theirs.json()["code"] == unknown.json()["code"] == "trace_not_found"
            assert (
                c.get("/api/v1/traces/shared-1", headers=as_("bob")).status_code == 404
            )  # the caller's id finds nothing
            assert rt.audit.query(action="trace.read") == []  # own reads are not audited

            # an operator may read it for support, and that read is on the record
            support = c.get(f"/api/v1/traces/{_rid(alice)}", headers=as_("ops"))
            assert support.status_code == 200 and support.json()["spans"] == body["spans"]
            [entry] = rt.audit.query(action="trace.read")
            assert (entry.actor, entry.target, entry.result) == ("ops", _rid(alice), "ok")
    finally:
        rt.close()


@pytest.mark.parametrize(
    "sent",
    [
        "alice@example.com",
        "rv_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0u1v",  # the shape of one of our API keys
        "x" * 65,
        "id with spaces",
        "a\tb",
    ],
)
def test_a_callers_x_request_id_that_is_not_a_plain_id_is_ignored(client: TestClient, sent: str) -> None:
    from ragvigil.ops.logging import configure_logging, reset_logging

    stream = io.StringIO()
    configure_logging("INFO", None, stream=stream)
    try:
        r = client.post("/api/v1/chat", json=CHAT, headers={"X-Request-ID": sent})
    finally:
        reset_logging()
    assert r.status_code == 200
    rid = _rid(r)
    assert len(rid) == 32 and int(rid, 16) >= 0  # a server-made id, not the caller's text
    assert sent not in stream.getvalue()  # neither on stdout nor in application.log (same lines)
    trace = client.get(f"/api/v1/traces/{rid}").json()
    assert trace["client_request_id"] is None and "ragvigil.client_request_id" not in trace["spans"][0]["attributes"]
    assert sent not in json.dumps(trace)


def test_a_plain_caller_request_id_is_kept_beside_the_servers(client: TestClient) -> None:
    from ragvigil.ops.logging import configure_logging, reset_logging

    stream = io.StringIO()
    configure_logging("INFO", None, stream=stream)
    try:
        r = client.post("/api/v1/chat", json=CHAT, headers={"X-Request-ID": "Order-42.retry:1_a"})
    finally:
        reset_logging()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    [access] = [x for x in lines if x["event"] == "http_request" and x["route"] == "/api/v1/chat"]
    assert access["request_id"] == _rid(r) != "Order-42.retry:1_a"
    assert access["client_request_id"] == "Order-42.retry:1_a"
    assert client.get(f"/api/v1/traces/{_rid(r)}").json()["client_request_id"] == "Order-42.retry:1_a"


def _status(span: Span) -> int:
    return span.status.code


def test_otlp_export_uses_the_http_genai_and_openinference_conventions(
    client: TestClient, collector: Callable[[], list[Span]]
) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    r = client.post(
        "/api/v1/chat",
        json=CHAT,
        headers={"X-Request-ID": "otlp-1", "traceparent": f"00-{trace_id}-b7ad6b7169203331-01"},
    )
    missing = client.post("/api/v1/chat", json={**CHAT, "session_id": "0" * 32})
    assert missing.status_code == 404
    mine = _received_request(collector(), _rid(r))
    root = mine["root"]
    assert root.trace_id.hex() == trace_id and root.parent_span_id.hex() == "b7ad6b7169203331"
    assert root.kind == Span.SpanKind.SPAN_KIND_SERVER and root.name == "POST /api/v1/chat"
    ra = _attrs(root)
    assert ra["ragvigil.request_id"] == _rid(r) and ra["ragvigil.client_request_id"] == "otlp-1"
    assert ra["http.request.method"] == "POST" and ra["http.response.status_code"] == 200
    assert ra["http.route"] == "/api/v1/chat" and ra["url.path"] == "/api/v1/chat" and ra["url.scheme"] == "http"
    assert "http.status_code" not in ra and "error.type" not in ra and _status(root) == Status.STATUS_CODE_UNSET
    assert ra["openinference.span.kind"] == "CHAIN" and ra["session.id"] == r.json()["session_id"]
    assert "input.value" not in ra and "output.value" not in ra  # message logging is off: no conversation text

    assert {"stage.history", "stage.retrieve", "stage.generate", "stage.persist"} <= set(mine)
    assert mine["stage.retrieve"].end_time_unix_nano > mine["stage.retrieve"].start_time_unix_nano
    retrieve, generate = _attrs(mine["stage.retrieve"]), _attrs(mine["stage.generate"])
    assert retrieve["openinference.span.kind"] == "RETRIEVER"
    source = r.json()["sources"][0]
    assert retrieve["retrieval.documents.0.document.id"] == source["chunk_id"]
    assert retrieve["retrieval.documents.0.document.score"] == pytest.approx(source["score"], abs=1e-5)
    assert json.loads(retrieve["retrieval.documents.0.document.metadata"]) == {"document_id": source["document_id"]}
    assert not any(k.endswith(".document.content") for k in retrieve) and "input.value" not in retrieve
    assert generate["openinference.span.kind"] == "LLM" and generate["gen_ai.operation.name"] == "chat"
    assert generate["gen_ai.provider.name"] == generate["llm.provider"] == "extractive"
    assert generate["gen_ai.request.model"] == generate["llm.model_name"] == "extractive"
    assert generate["gen_ai.conversation.id"] == r.json()["session_id"] and "output.value" not in generate
    assert _attrs(mine["stage.persist"])["openinference.span.kind"] == "CHAIN"

    # a 4xx: the caller's error, so the server span's status stays unset and no error.type (HTTP semconv);
    # the stage that raised is an ERROR span with the exception's type
    failed = _received_request(collector(), _rid(missing))
    fa = _attrs(failed["root"])
    assert fa["http.response.status_code"] == 404 and "error.type" not in fa
    assert _status(failed["root"]) == Status.STATUS_CODE_UNSET
    history = failed["stage.history"]
    assert _status(history) == Status.STATUS_CODE_ERROR and _attrs(history)["error.type"] == "SessionNotFound"


def test_a_5xx_is_an_error_span_with_its_status_as_error_type(
    sample_runtime: Runtime, collector: Callable[[], list[Span]]
) -> None:
    app = create_app(runtime=sample_runtime)

    async def boom() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/api/v1/test-boom/{item}", boom, methods=["GET"])
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/api/v1/test-boom/7?q=1")
        odd = c.request("BREW", "/api/v1/test-boom/7")
    assert r.status_code == 500
    spans = collector()
    [root] = [s for s in spans if _attrs(s).get("url.path") == "/api/v1/test-boom/7" and s.name.startswith("GET")]
    a = _attrs(root)
    assert root.name == "GET /api/v1/test-boom/{item}" and a["http.route"] == "/api/v1/test-boom/{item}"
    assert a["url.path"] == "/api/v1/test-boom/7" and a["http.response.status_code"] == 500
    assert _status(root) == Status.STATUS_CODE_ERROR and a["error.type"] == "500"
    other = _attrs(_received_request(spans, _rid(odd))["root"])
    assert other["http.request.method"] == "_OTHER" and other["http.request.method_original"] == "BREW"


def test_with_message_logging_on_spans_carry_the_question_answer_and_passages(
    sample_data_dir: Path, tmp_path: Path, collector: Callable[[], list[Span]]
) -> None:
    d = tmp_path / "data"
    shutil.copytree(sample_data_dir, d)
    rt = Runtime(make_settings(d, log_message_contents=True, message_log_key=new_key()))
    try:
        with local_client(create_app(runtime=rt)) as c:
            r = c.post("/api/v1/chat", json=CHAT)
        mine = _received_request(collector(), _rid(r))
    finally:
        rt.close()
        semconv.capture_contents(False)
    answer = r.json()["answer"]
    root, retrieve, generate = (_attrs(mine[k]) for k in ("root", "stage.retrieve", "stage.generate"))
    assert root["input.value"] == generate["input.value"] == retrieve["input.value"] == CHAT["message"]
    assert root["output.value"] == generate["output.value"] == answer
    assert generate["output.mime_type"] == "text/plain"
    assert retrieve["retrieval.documents.0.document.content"]  # the passage text itself
    assert _attrs(mine["stage.record"])["openinference.span.kind"] == "CHAIN"


def test_instrumentation_switch_turns_spans_and_metrics_off(sample_runtime) -> None:  # type: ignore[no-untyped-def]
    from ragvigil.ops import instrumentation
    from ragvigil.ops.metrics import REGISTRY

    def chat_count() -> float:
        labels = {"route": "/api/v1/chat", "method": "POST", "status": "200"}
        return REGISTRY.get_sample_value("ragvigil_http_requests_total", labels) or 0.0

    instrumentation.configure(False)
    try:
        with local_client(create_app(runtime=sample_runtime)) as c:
            before = chat_count()
            r = c.post("/api/v1/chat", json=CHAT, headers={"X-Request-ID": "off-1"})
            assert r.status_code == 200 and len(_rid(r)) == 32 and r.json()["sources"]  # still a request id
            assert chat_count() == before
            assert tracing.RECENT.for_request(_rid(r)) is None
    finally:
        instrumentation.configure(True)


def test_instrumentation_can_be_switched_at_run_time_and_the_switch_is_audited(
    client: TestClient, sample_runtime
) -> None:  # type: ignore[no-untyped-def]
    try:
        assert client.put("/api/v1/ops/instrumentation", json={"enabled": False}).json() == {"enabled": False}
        off = client.post("/api/v1/chat", json=CHAT)
        assert client.get(f"/api/v1/traces/{_rid(off)}").status_code == 404
        assert client.put("/api/v1/ops/instrumentation", json={"enabled": True}).json() == {"enabled": True}
        on = client.post("/api/v1/chat", json=CHAT)
        assert client.get(f"/api/v1/traces/{_rid(on)}").status_code == 200
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


def test_a_callers_traceparent_is_continued_and_the_trace_id_returned(client: TestClient) -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    r = client.post("/api/v1/chat", json=CHAT, headers={"traceparent": parent})
    trace = client.get(f"/api/v1/traces/{_rid(r)}").json()
    assert trace["spans"][0]["parent_id"] == "00f067aa0ba902b7"
    assert trace["trace_id"] == tracing.RECENT.trace_id(_rid(r)) == "4bf92f3577b34da6a3ce929d0e0e4736"
    fresh = client.post("/api/v1/chat", json={"message": "hi"}, headers={"traceparent": "garbage"})
    trace = client.get(f"/api/v1/traces/{_rid(fresh)}").json()
    assert trace["spans"][0]["parent_id"] is None and len(trace["trace_id"]) == 32


def test_a_stored_trace_is_never_replaced_by_a_later_one_with_the_same_id() -> None:
    store = tracing.RecentTraces()
    first, second = tracing.RequestTrace("same", "first"), tracing.RequestTrace("same", "second")
    store.add(first)
    store.add(second)
    assert [s["name"] for s in store.for_request("same") or []] == ["first"]
