"""A request for a person with nothing relevant found gets the notice alone; a hand-off that cannot be queued says so."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from ragvigil.app import Runtime
from ragvigil.chat.handoff.spool import SpoolFull
from ragvigil.chat.handoff.stage import NOTICE, UNREACHABLE
from ragvigil.chat.pipeline import Turn
from ragvigil.providers.extractive import NO_ANSWER
from tests.conftest import sse_events


def test_asking_for_a_person_is_answered_by_the_notice_alone(sample_runtime: Runtime) -> None:
    turn = sample_runtime.pipeline.run(Turn(message="转人工", kb="default"))
    assert turn.handoff is not None and turn.handoff.reason == "human_request"
    assert turn.answer == NOTICE["zh"]  # not "抱歉，知识库里没有找到…" and then the notice
    assert turn.settled_by == "handoff_request" and turn.sources == []
    assert NO_ANSWER["zh"] not in turn.answer


def test_a_complaint_that_also_asks_something_keeps_its_answer(sample_runtime: Runtime) -> None:
    turn = sample_runtime.pipeline.run(Turn(message="我要投诉，专业版多少钱？", kb="default"))
    assert turn.handoff is not None
    assert turn.sources and turn.answer.endswith(NOTICE["zh"]) and turn.answer != NOTICE["zh"]


def test_a_stream_sends_the_notice_alone_too(client: TestClient) -> None:
    resp = client.post("/api/v1/chat/stream", json={"message": "I want to talk to a human agent"})
    assert resp.status_code == 200
    events = sse_events(resp.text)
    text = "".join(d.get("text", "") for e, d in events if e == "delta")
    done = [d for e, d in events if e == "done"][-1]
    assert text == NOTICE["en"] == done["answer"]
    assert done["handoff"]["reason"] == "human_request"


def test_a_hand_off_that_cannot_be_queued_tells_the_user_no_one_could_be_reached(
    sample_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(_new: object) -> None:
        raise SpoolFull("the hand-off spool is full")

    monkeypatch.setattr(sample_runtime.handoffs.store, "create", full)
    turn = sample_runtime.pipeline.run(Turn(message="转人工", kb="default"))
    assert turn.handoff is None and turn.degraded
    assert turn.answer == UNREACHABLE["zh"]  # never an empty answer, never a promise of a person
    crisis = sample_runtime.pipeline.run(Turn(message="我不想活了", kb="default"))
    assert "12356" in crisis.answer and crisis.answer.endswith(UNREACHABLE["zh"])
