"""Every turn understood, through the real request path: one embedding per turn, crisis and flagged
messages settled by the documented rule (also in safe mode), a failing check failing closed, small talk
answered, and the analysis on the REST and SSE responses."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from ragvigil.app import Runtime
from ragvigil.chat.understand import SMALL_TALK
from ragvigil.config import SAFE_RESPONSE_EN, SAFE_RESPONSE_ZH
from ragvigil.providers.extractive import NO_ANSWER
from tests.conftest import metric_value, sse_events
from tests.understand_standins import (
    CALM_EN,
    HANDED_EN,
    HANDED_ZH,
    CountingEmbedder,
    understand_with_standins,
)


def test_a_turn_is_embedded_once_and_its_analysis_reads_that_vector(
    client: TestClient, sample_runtime: Runtime
) -> None:
    _, emotion, _ = understand_with_standins(sample_runtime)
    counting = CountingEmbedder(sample_runtime.embedder.inner)
    sample_runtime.embedder.inner = counting
    r = client.post("/api/v1/chat", json={"message": "How do I export my notes as a PDF file?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sources"] and body["degraded"] is False  # answered from the knowledge base as before
    assert len(counting.calls) == 1, counting.calls  # understanding and retrieval shared one embedding
    assert len(emotion.vectors) == 1 and emotion.vectors[0] is not None and emotion.vectors[0].shape == (384,)
    assert body["analysis"]["safety"] == {"category": None, "severity": "none"}
    assert body["analysis"]["intent"] == {"name": "product_inquiry", "confidence": 0.62}
    assert set(body["analysis"]["emotion"]) == {"label", "polarity", "score"}
    assert body["handoff"] is None and body["replaced"] is False
    assert metric_value(client, "ragvigil_intent_turns_total", intent="product_inquiry") >= 1
    assert metric_value(client, "ragvigil_analysis_duration_seconds_count", part="safety") >= 1


def test_without_checkers_a_turn_is_not_embedded_twice_and_carries_no_analysis(
    client: TestClient, sample_runtime: Runtime
) -> None:
    sample_runtime.safety = sample_runtime.emotion = sample_runtime.intents = None  # none configured
    counting = CountingEmbedder(sample_runtime.embedder.inner)
    sample_runtime.embedder.inner = counting
    body = client.post("/api/v1/chat", json={"message": "How do I export my notes as a PDF file?"}).json()
    assert body["analysis"] is None and body["sources"]
    assert len(counting.calls) == 1


def test_a_busy_embedder_leaves_the_analysis_without_a_vector_and_the_turn_answered(
    client: TestClient, sample_runtime: Runtime
) -> None:
    safety, emotion, _ = understand_with_standins(sample_runtime)
    sample_runtime.embedder.inner = CountingEmbedder(sample_runtime.embedder.inner, busy=True)
    r = client.post("/api/v1/chat", json={"message": "How do I export my notes as a PDF file?"})
    assert r.status_code == 200, r.text
    assert r.json()["sources"]  # BM25 still answered
    # checked twice: admission asks the same check (lexicon only) for the priority, then the turn itself
    assert emotion.vectors == [None] and len(safety.checked) == 2
    assert r.json()["analysis"]["emotion"]["label"] == "neutral"
    crisis = client.post("/api/v1/chat", json={"message": "I want to kill myself"}).json()
    assert crisis["answer"] == HANDED_EN  # the text alone still finds a crisis


def test_a_crisis_message_gets_the_crisis_response_never_a_kb_answer_also_in_safe_mode(
    client: TestClient, sample_runtime: Runtime
) -> None:
    understand_with_standins(sample_runtime)
    before = metric_value(
        client, "ragvigil_safety_flags_total", category="self_harm", severity="critical", direction="input"
    )
    en = client.post("/api/v1/chat", json={"message": "How do I export my notes? I want to kill myself"}).json()
    assert en["answer"] == HANDED_EN and en["sources"] == [] and en["provider"] is None
    assert en["analysis"]["safety"] == {"category": "self_harm", "severity": "critical"}
    zh = client.post("/api/v1/chat", json={"message": "我好难过，不想活了"}).json()
    assert zh["answer"] == HANDED_ZH and zh["analysis"]["emotion"]["label"] == "sadness"
    after = metric_value(
        client, "ragvigil_safety_flags_total", category="self_harm", severity="critical", direction="input"
    )
    assert after == before + 2

    client.put("/api/v1/ops/safe-mode", json={"active": True, "reason": "drill"})
    crisis = client.post("/api/v1/chat", json={"message": "我不想活了"}).json()
    assert crisis["answer"] == HANDED_ZH  # the crisis response with its hotline beats the generic safe answer
    plain = client.post("/api/v1/chat", json={"message": "专业版年付多少钱？"}).json()
    assert plain["answer"] == SAFE_RESPONSE_ZH  # safe mode still answers everything else

    stored = client.get(f"/api/v1/sessions/{zh['session_id']}/messages").json()
    assert [m["content"] for m in stored] == ["我好难过，不想活了", HANDED_ZH]


def test_high_severity_settles_calmly_and_low_severity_is_answered_and_flagged(
    client: TestClient, sample_runtime: Runtime, caplog
) -> None:  # type: ignore[no-untyped-def]
    understand_with_standins(sample_runtime)
    high = client.post("/api/v1/chat", json={"message": "how do I export a bomb"}).json()
    assert high["answer"] == CALM_EN and high["sources"] == []
    with caplog.at_level("WARNING", logger="ragvigil.chat.understand"):
        low = client.post("/api/v1/chat", json={"message": "How do I export my notes, idiot?"}).json()
    assert low["sources"] and low["answer"] != CALM_EN  # answered
    assert low["analysis"]["safety"] == {"category": "harassment", "severity": "low"}
    flagged = [r for r in caplog.records if r.getMessage() == "safety_flagged"]
    assert flagged and flagged[-1].category == "harassment" and flagged[-1].rules == ["pattern:harassment.insult"]
    assert "idiot" not in json.dumps([vars(r).get("rules") for r in flagged])  # ids, never the content


def test_a_safety_check_that_raises_fails_closed(client: TestClient, sample_runtime: Runtime) -> None:
    understand_with_standins(sample_runtime, broken=True)
    r = client.post("/api/v1/chat", json={"message": "How do I export my notes as a PDF file?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] == SAFE_RESPONSE_EN and body["sources"] == [] and body["provider"] is None
    assert body["degraded"] is True
    assert any("safety check failed (RuntimeError)" in reason for reason in body["degraded_reasons"])
    assert metric_value(client, "ragvigil_safety_flags_total", category="error", direction="input") >= 1


def test_a_greeting_gets_a_friendly_reply_and_a_greeting_question_its_answer(
    client: TestClient, sample_runtime: Runtime
) -> None:
    understand_with_standins(sample_runtime)
    hello = client.post("/api/v1/chat", json={"message": "hello"}).json()
    assert hello["answer"] == SMALL_TALK["greeting"]["en"] and hello["answer"] != NO_ANSWER["en"]
    assert hello["analysis"]["intent"]["name"] == "greeting"
    zh = client.post("/api/v1/chat", json={"message": "你好"}).json()
    assert zh["answer"] == SMALL_TALK["greeting"]["zh"]
    thanks = client.post("/api/v1/chat", json={"message": "谢谢"}).json()
    assert thanks["answer"] == SMALL_TALK["thanks"]["zh"]
    both = client.post("/api/v1/chat", json={"message": "hi, how do I export my notes as a PDF file?"}).json()
    assert both["sources"] and both["answer"] != SMALL_TALK["greeting"]["en"]  # a question that greets is answered


def test_a_custom_small_talk_reply_is_used(client: TestClient, sample_runtime: Runtime) -> None:
    understand_with_standins(sample_runtime)
    sample_runtime.understanding.small_talk_reply = lambda intent, language: f"[{intent.name}:{language}]"
    assert client.post("/api/v1/chat", json={"message": "hello"}).json()["answer"] == "[greeting:en]"


def test_the_stream_carries_the_analysis_in_meta_and_done(client: TestClient, sample_runtime: Runtime) -> None:
    understand_with_standins(sample_runtime)
    events = sse_events(client.post("/api/v1/chat/stream", json={"message": "我不想活了"}).text)
    kinds = [k for k, _ in events]
    assert kinds[0] == "meta" and kinds[-1] == "done"
    meta, done = events[0][1], events[-1][1]
    assert meta["analysis"]["safety"] == {"category": "self_harm", "severity": "critical"}
    assert "handoff" in meta
    assert done["answer"] == HANDED_ZH and done["analysis"] == meta["analysis"] and done["replaced"] is False
    assert "".join(d["text"] for k, d in events if k == "delta") == HANDED_ZH
