"""Follow-ups through ``/api/v1/chat`` with a real session over the sample help centre."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from ragvigil.app import Runtime
from ragvigil.chat.pipeline import Retrieve, Turn


def converse(client: TestClient, *questions: str) -> list[dict]:
    """Ask ``questions`` in one session, in order; every answer body."""
    answers: list[dict] = []
    session = None
    for q in questions:
        body = {"message": q, "kb": "default"} | ({"session_id": session} if session else {})
        resp = client.post("/api/v1/chat", json=body)
        assert resp.status_code == 200, resp.text
        answers.append(resp.json())
        session = answers[-1]["session_id"]
    return answers


def first_source(answer: dict) -> str:
    return Path(answer["sources"][0]["source"]).name


def test_team_plan_follow_up_two_turns_after_the_price_question_answers_its_price(client: TestClient) -> None:
    """专业版多少钱？ → 那学生呢？ → 认证有效期多久？ → 团队版呢？: the team plan's price (¥48/人/月)."""
    answers = converse(client, "专业版多少钱？", "那学生呢？", "认证有效期多久？", "团队版呢？")
    assert "¥134" in answers[1]["answer"]  # the student price of the Pro plan
    last = answers[-1]
    assert first_source(last) == "zh-plans-pricing.md"
    assert "¥48" in last["answer"], last["answer"]


def test_and_on_mobile_answers_from_the_mobile_app_article(client: TestClient) -> None:
    answers = converse(client, "How do I install the app?", "and on mobile?")
    assert first_source(answers[0]) == "en-desktop-install.md"
    assert first_source(answers[1]) == "en-mobile-app.html", [s["source"] for s in answers[1]["sources"]]
    assert any(s["cited"] and s["source"].endswith("en-mobile-app.html") for s in answers[1]["sources"])


def test_the_retrieve_span_says_which_query_was_searched_and_why(sample_runtime: Runtime) -> None:
    stage = Retrieve(sample_runtime.retriever, context_chars=300)
    history = [("user", "How do I install the app?"), ("assistant", "Download NimbusNote-Setup.exe.")]
    followup = Turn("and on mobile?", "default", history=list(history))
    new_topic = Turn("How do I export my notes as PDF?", "default", history=list(history))
    for turn in (followup, new_topic):
        stage(turn)
    attrs = stage.span_attributes(followup)
    assert attrs["ragvigil.retrieval.query_reason"] == "follow-up: ellipsis"
    assert attrs["ragvigil.retrieval.followup"] is True
    assert followup.retrieval is not None and "install the app" in followup.retrieval.query
    attrs = stage.span_attributes(new_topic)
    assert (attrs["ragvigil.retrieval.query_reason"], attrs["ragvigil.retrieval.followup"]) == ("new topic", False)
    assert new_topic.retrieval is not None and new_topic.retrieval.query == new_topic.message
