"""The answer cache: a repeated first-turn question is answered without searching again, for as long as the
knowledge base is unchanged; a conversation, a crisis or a degraded answer never goes through it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ragvigil.app import Runtime
from ragvigil.chat.answer_cache import AnswerCache
from ragvigil.chat.pipeline import Retrieve
from ragvigil.types import Generation, Hit, Retrieval
from tests.conftest import metric_value

QUESTION = "How do I export my notes as a PDF file?"
REQUESTS = "ragvigil_answer_cache_requests_total"


def answers_of(rt: Runtime) -> AnswerCache:
    retrieve = next(s for s in rt.pipeline.stages if isinstance(s, Retrieve))
    assert retrieve.answers is not None
    return retrieve.answers


def count(client: TestClient, outcome: str) -> float:
    return metric_value(client, REQUESTS, outcome=outcome)


@pytest.fixture
def searches(sample_runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The queries the retriever really searched (the real search, counted)."""
    seen: list[str] = []
    search: Callable[..., Retrieval] = sample_runtime.retriever.search

    def counting(kb: str, query: str, *args: Any, **kwargs: Any) -> Retrieval:
        seen.append(query)
        return search(kb, query, *args, **kwargs)

    monkeypatch.setattr(sample_runtime.retriever, "search", counting)
    return seen


def ask(client: TestClient, message: str, **extra: object) -> dict[str, Any]:
    r = client.post("/api/v1/chat", json={"message": message, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def stored(client: TestClient, session_id: str) -> list[dict[str, Any]]:
    r = client.get(f"/api/v1/sessions/{session_id}/messages")
    assert r.status_code == 200, r.text
    return r.json()


def test_a_repeated_question_is_answered_from_the_cache_and_still_stored(
    client: TestClient, sample_runtime: Runtime, searches: list[str]
) -> None:
    hits, misses = count(client, "hit"), count(client, "miss")
    first = ask(client, QUESTION)
    second = ask(client, "  How do I export my notes   as a PDF file? ")  # the same question, spaced differently
    assert searches == [QUESTION]  # the second turn searched nothing
    assert (count(client, "hit"), count(client, "miss")) == (hits + 1, misses + 1)
    assert second["answer"] == first["answer"] and "PDF" in first["answer"]
    assert second["sources"] == first["sources"] and second["degraded"] is False
    assert second["session_id"] != first["session_id"] and second["message_id"] != first["message_id"]
    for turn in (first, second):  # every turn is persisted like any other
        assert [m["content"] for m in stored(client, turn["session_id"])][-1] == turn["answer"]


def test_an_ingest_in_between_misses_and_answers_from_the_new_document(
    client: TestClient, sample_runtime: Runtime, searches: list[str]
) -> None:
    question = "What is the Zorblax voucher refund window?"
    before = ask(client, question)
    assert "45 days" not in before["answer"]
    doc = b"# Zorblax vouchers\n\nThe Zorblax voucher refund window is 45 days from the day of purchase.\n"
    up = client.post("/api/v1/kb/default/documents", files={"file": ("zorblax.md", doc, "text/markdown")})
    assert up.status_code == 201, up.text
    hits = count(client, "hit")
    after = ask(client, question)
    assert searches == [question, question]  # searched again: the knowledge base changed
    assert count(client, "hit") == hits
    assert "45 days" in after["answer"]
    assert any(s["title"] == "Zorblax vouchers" or s["source"] == "zorblax.md" for s in after["sources"])
    again = ask(client, question)  # the new version's answer is kept in its turn
    assert again["answer"] == after["answer"] and count(client, "hit") == hits + 1


def test_a_turn_of_a_conversation_bypasses_the_cache(
    client: TestClient, sample_runtime: Runtime, searches: list[str]
) -> None:
    first = ask(client, QUESTION)
    ask(client, QUESTION)  # kept and found again as a first turn
    bypasses, hits = count(client, "bypass"), count(client, "hit")
    follow = ask(client, QUESTION, session_id=first["session_id"])  # the same words, now with history
    assert count(client, "bypass") == bypasses + 1 and count(client, "hit") == hits
    assert len(searches) == 2  # it was searched: its answer may depend on the conversation
    assert follow["answer"]


def test_a_crisis_message_is_never_answered_from_the_cache(
    client: TestClient, sample_runtime: Runtime, searches: list[str]
) -> None:
    crisis = "I want to kill myself"
    cache = answers_of(sample_runtime)
    # even with a knowledge-base answer kept under the crisis message's own key, the safety stage answers it
    hit = Hit(1, "d", "Export", "export.md", "Export", "Export your notes from the menu.", 1.0, relevant=True)
    kept = Retrieval(crisis, [], [hit])
    cache.put(cache.key("default", crisis, "en"), kept, Generation("Export your notes. [1]", "extractive"), [hit])
    hits = count(client, "hit")
    for _ in range(2):
        reply = ask(client, crisis)
        assert "Export your notes" not in reply["answer"]
        assert reply["analysis"]["safety"]["category"] == "self_harm"
    assert count(client, "hit") == hits and searches == []
    assert len(cache) == 1  # the crisis turns stored nothing


def test_a_degraded_answer_is_not_kept(client: TestClient, sample_runtime: Runtime, searches: list[str]) -> None:
    cache = answers_of(sample_runtime)
    sample_runtime.retriever.mode.force_lexical("test", by="test")
    degraded = ask(client, QUESTION)
    assert degraded["degraded"] is True
    assert len(cache) == 0
    sample_runtime.retriever.mode.restore(by="test")
    hits = count(client, "hit")
    fresh = ask(client, QUESTION)
    assert fresh["degraded"] is False and count(client, "hit") == hits  # made afresh, not the degraded one
    assert searches == [QUESTION, QUESTION] and len(cache) == 1


def test_a_streamed_repeat_is_answered_from_the_cache(
    client: TestClient, sample_runtime: Runtime, searches: list[str]
) -> None:
    first = ask(client, QUESTION)
    r = client.post("/api/v1/chat/stream", json={"message": QUESTION})
    assert r.status_code == 200, r.text
    assert searches == [QUESTION]
    assert first["answer"].split(" [")[0][:30] in r.text


# --- the cache itself: bounds and time ---------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def entry(text: str) -> tuple[Retrieval, Generation, list[Hit]]:
    hit = Hit(1, "d", "t", "s", "a", text, 1.0, relevant=True)
    return Retrieval("q", ["q"], [hit]), Generation(text, "extractive"), [hit]


def test_an_answer_older_than_the_ttl_is_not_reused() -> None:
    clock = Clock()
    cache = AnswerCache(lambda kb: 1, "extractive", ttl_s=60, clock=clock)
    key = cache.key("kb", "q", "en")
    cache.put(key, *entry("an answer"))
    clock.now = 59
    assert cache.get(key) is not None
    clock.now = 121
    assert cache.get(key) is None and len(cache) == 0 and cache.bytes == 0


def test_the_cache_is_bounded_by_entries_and_bytes() -> None:
    by_count = AnswerCache(lambda kb: 1, "extractive", max_entries=3)
    for i in range(10):
        by_count.put(by_count.key("kb", f"q{i}", "en"), *entry(f"answer {i}"))
    assert len(by_count) == 3 and by_count.get(by_count.key("kb", "q9", "en")) is not None
    assert by_count.get(by_count.key("kb", "q0", "en")) is None
    by_bytes = AnswerCache(lambda kb: 1, "extractive", max_bytes=20_000)
    for i in range(50):
        by_bytes.put(by_bytes.key("kb", f"q{i}", "en"), *entry("x" * 1000 + str(i)))
    assert 0 < by_bytes.bytes <= 20_000 and len(by_bytes) < 50
    by_bytes.put(by_bytes.key("kb", "huge", "en"), *entry("x" * 20_000))  # over a quarter of the bound
    assert by_bytes.get(by_bytes.key("kb", "huge", "en")) is None


def test_a_new_knowledge_base_version_misses() -> None:
    version = {"kb": 1}
    cache = AnswerCache(lambda kb: version[kb], "extractive")
    cache.put(cache.key("kb", "q", "en"), *entry("old"))
    version["kb"] = 2
    assert cache.get(cache.key("kb", "q", "en")) is None


def test_while_paused_answers_are_made_afresh(client: TestClient, sample_runtime: Runtime, searches: list[str]) -> None:
    """The runtime pauses the cache while a drill's fault is injected (``Runtime`` wires ``faults.list``)."""
    cache = answers_of(sample_runtime)
    ask(client, QUESTION)
    ask(client, QUESTION)  # kept and found
    assert searches == [QUESTION]
    cache.paused = lambda: True
    bypasses, hits = count(client, "bypass"), count(client, "hit")
    ask(client, QUESTION)  # a drill sees the path it breaks, not the answer kept from before
    assert searches == [QUESTION, QUESTION]
    assert count(client, "bypass") == bypasses + 1 and count(client, "hit") == hits
    cache.paused = lambda: False
    ask(client, QUESTION)
    assert count(client, "hit") == hits + 1


def test_a_vector_servers_count_is_asked_at_most_once_a_second_per_base() -> None:
    """The cache's version reads the vector count on every lookup: for a server, that is a request per turn."""
    from ragvigil.chat.build import throttled

    asked: list[str] = []
    now = [100.0]

    def count(kb: str) -> int:
        asked.append(kb)
        return len(asked)

    cached = throttled(count, 1.0, clock=lambda: now[0])
    assert [cached("a"), cached("a"), cached("b")] == [1, 1, 2]
    now[0] += 1.5
    assert cached("a") == 3 and asked == ["a", "b", "a"]
