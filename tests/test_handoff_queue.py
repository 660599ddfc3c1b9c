"""Hand-off to a person: each trigger queues a record an operator sees in ``GET /api/v1/handoffs`` and
``ragvigil handoffs``; a trigger repeated in a session updates its record; the user is told in their
language; the queue is an operator's; a session's emotions are its owner's.

The turns run through the real pipeline (history, retrieval, generation, persist) of a staging instance
with real keys. Only the understanding of a turn is given (``Understood``): the safety, emotion and
intent engines are not this test's subject, so the turn's ``TurnAnalysis`` is built directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.chat.handoff.stage import CRISIS_NOTICE, NOTICE
from ragvigil.chat.pipeline import BaseStage, Turn
from ragvigil.chat.understanding import Emotion, Intent, SafetyFinding, SafetyVerdict, TurnAnalysis
from ragvigil.cli import app as cli_app
from ragvigil.ops.access import Role
from ragvigil.providers.extractive import NO_ANSWER
from tests.conftest import local_client, make_settings
from tests.handoff_cases import FAQ, understand_as

HOTLINES = "If you are thinking about ending your life, call 988 now."
CRISIS = SafetyVerdict("self_harm", "critical", (SafetyFinding("self_harm", "critical", "lexicon", "t1"),))
SAD = Emotion("sadness", "negative", -0.6)
CALM = Emotion("neutral", "neutral", 0.0)


def analysis(
    safety: SafetyVerdict | None = None, emotion: Emotion | None = CALM, intent: str | None = None
) -> TurnAnalysis:
    action = "handoff" if intent in ("complaint", "human_request") else None
    return TurnAnalysis(
        safety=safety or SafetyVerdict(), emotion=emotion, intent=Intent(intent, 0.9, action) if intent else None
    )


class Understood(BaseStage):
    """The turn's analysis as given by the test (keyed by message); a crisis is settled with the hotlines."""

    name = "understand"

    def __init__(self) -> None:
        self.given: dict[str, TurnAnalysis] = {}

    def __call__(self, turn: Turn) -> None:
        turn.analysis = self.given.get(turn.message, analysis())
        if turn.analysis.safety.crisis:
            turn.answer, turn.settled_by = HOTLINES, self.name


class Staged:
    def __init__(self, rt: Runtime, client: TestClient, keys: dict[str, str], understood: Understood) -> None:
        self.rt, self.c, self.keys, self.understood = rt, client, keys, understood

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    def chat(self, message: str, a: TurnAnalysis | None = None, who: str = "alice", **body: object) -> dict:
        if a is not None:
            self.understood.given[message] = a
        r = self.c.post("/api/v1/chat", json={"message": message, "user_id": "u1", **body}, headers=self.h(who))
        assert r.status_code == 200, r.text
        return r.json()

    def queue(self, who: str = "olga", **params: object) -> httpx.Response:
        return self.c.get("/api/v1/handoffs", params=params, headers=self.h(who))


@pytest.fixture
def staged(tmp_path: Path) -> Iterator[Staged]:
    rt = Runtime(make_settings(tmp_path / "data", profile="staging"))
    rt.ingestor.ingest_bytes("default", "faq.md", FAQ)
    understood = Understood()
    understand_as(rt, understood)  # the test's analysis
    people = {"alice": Role.client, "bob": Role.client, "vera": Role.viewer, "olga": Role.operator}
    keys = {name: rt.keys.create(f"{name}-key", role)[1] for name, role in people.items()}
    try:
        with local_client(create_app(runtime=rt)) as c:
            yield Staged(rt, c, keys, understood)
    finally:
        rt.close()


def _items(s: Staged, **params: object) -> list[dict]:
    r = s.queue(**params)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_each_trigger_queues_a_record_in_the_api_and_the_cli(staged: Staged, monkeypatch: pytest.MonkeyPatch) -> None:
    s = staged
    assert _items(s) == []
    crisis = s.chat("I want to end it all", analysis(CRISIS, SAD))
    complaint = s.chat("Your service is a disgrace, I want to complain", analysis(intent="complaint"))
    human = s.chat("Let me talk to a real person", analysis(intent="human_request"))
    sad_sid = None
    for i in range(3):  # three negative turns in a row
        sad_sid = s.chat(f"this is getting worse {i}", analysis(emotion=SAD), session_id=sad_sid)["session_id"]
    lost_sid = None
    for q in ("what colour is the moon", "how tall is a giraffe", "who won the cup in 1930"):
        answer = s.chat(q, session_id=lost_sid)
        lost_sid = answer["session_id"]
        assert answer["sources"] == [] and answer["answer"].startswith(NO_ANSWER["en"])

    by_reason = {r["reason"]: r for r in _items(s)}
    assert set(by_reason) == {"crisis", "complaint", "human_request", "negative_trend", "repeated_no_answer"}
    assert by_reason["crisis"]["priority"] == 1 and by_reason["crisis"]["session_id"] == crisis["session_id"]
    assert by_reason["complaint"]["session_id"] == complaint["session_id"]
    assert (
        by_reason["human_request"]["priority"] == 3 and by_reason["human_request"]["session_id"] == human["session_id"]
    )
    assert by_reason["negative_trend"]["session_id"] == sad_sid
    assert by_reason["repeated_no_answer"]["session_id"] == lost_sid
    assert by_reason["complaint"]["priority"] == by_reason["negative_trend"]["priority"] == 2
    assert [r["priority"] for r in _items(s)] == [1, 2, 2, 3, 3]  # the most urgent first
    assert all("message" not in r for r in _items(s))  # no user text unless asked for
    assert crisis["answer"].startswith(HOTLINES) and crisis["answer"].endswith(CRISIS_NOTICE["en"])
    assert human["answer"].endswith(NOTICE["en"])

    # the triggering message only on request, and that read is audited
    with_text = {r["reason"]: r for r in _items(s, include="message")}
    assert with_text["human_request"]["message"] == "Let me talk to a real person"
    audit = s.rt.audit.query(action="handoff.read")
    assert len(audit) == 1 and audit[0].actor == "olga-key"

    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(s.rt.settings.data_dir))
    runner = CliRunner()
    out = runner.invoke(cli_app, ["handoffs", "list", "--json"])
    assert out.exit_code == 0, out.output
    assert {r["reason"] for r in json.loads(out.output)["items"]} == set(by_reason)
    table = runner.invoke(cli_app, ["handoffs", "list", "--status", "open", "--priority", "1"])
    assert table.exit_code == 0 and "crisis" in table.output and "complaint" not in table.output
    claimed = runner.invoke(cli_app, ["handoffs", "claim", by_reason["crisis"]["id"][:8], "--who", "dana", "--json"])
    assert claimed.exit_code == 0, claimed.output
    assert json.loads(claimed.output)["status"] == "claimed"
    assert s.c.get(f"/api/v1/handoffs/{by_reason['crisis']['id']}", headers=s.h("olga")).json()["claimed_by"] == "dana"
    assert [e.actor for e in s.rt.audit.query(action="handoff.claim")] == ["dana"]
    bad = runner.invoke(cli_app, ["handoffs", "list", "--status", "lost"])
    assert bad.exit_code == 2


def test_a_repeated_trigger_updates_its_record_and_a_crisis_makes_the_session_urgent(staged: Staged) -> None:
    s = staged
    sid = s.chat("I want a human", analysis(intent="human_request"))["session_id"]
    s.chat("A human, please, now", analysis(intent="human_request"), session_id=sid)
    s.chat("Still nobody? Get me a person", analysis(intent="human_request"), session_id=sid)
    queue = _items(s)
    assert len(queue) == 1 and queue[0]["reason"] == "human_request" and queue[0]["priority"] == 3
    last = s.rt.sessions.messages(sid)[-2]
    assert queue[0]["message_id"] == last.id  # it points at the newest trigger

    s.chat("I can't go on, I'll end my life", analysis(CRISIS, SAD), session_id=sid)
    queue = _items(s)
    assert {r["reason"] for r in queue} == {"human_request", "crisis"}
    assert all(r["priority"] == 1 for r in queue)  # the older record of the session is urgent now too

    # a closed record does not swallow the next trigger: that queues a new one
    rid = next(r["id"] for r in queue if r["reason"] == "human_request")
    assert (
        s.c.post(f"/api/v1/handoffs/{rid}/close", json={"note": "called back"}, headers=s.h("olga")).status_code == 200
    )
    s.chat("A person again please", analysis(intent="human_request"), session_id=sid)
    open_ = _items(s, status="open")
    assert sorted(r["reason"] for r in open_) == ["crisis", "human_request"]
    assert next(r for r in open_ if r["reason"] == "human_request")["id"] != rid


def test_the_notice_is_in_the_turns_language(staged: Staged) -> None:
    s = staged
    zh = s.chat("我要投诉，你们太差了", analysis(intent="complaint"))
    assert zh["answer"].endswith(NOTICE["zh"])
    zh_crisis = s.chat("我不想活了", analysis(CRISIS, SAD))
    assert zh_crisis["answer"].startswith(HOTLINES) and zh_crisis["answer"].endswith(CRISIS_NOTICE["zh"])
    plain = s.chat("How long does shipping take?")
    assert NOTICE["en"] not in plain["answer"] and "three days" in plain["answer"]
    assert len(_items(s)) == 2


def test_the_queue_is_an_operators_and_its_errors_are_json(staged: Staged) -> None:
    s = staged
    s.chat("Let me talk to a real person", analysis(intent="human_request"))
    for who in ("alice", "vera"):
        r = s.queue(who)
        assert r.status_code == 403 and r.json()["code"] == "forbidden", r.text
        rid = _items(s)[0]["id"]
        assert s.c.post(f"/api/v1/handoffs/{rid}/claim", headers=s.h(who)).status_code == 403
        assert s.c.get(f"/api/v1/handoffs/{rid}", headers=s.h(who)).status_code == 403
    assert s.c.get("/api/v1/handoffs").status_code == 401

    rid = _items(s)[0]["id"]
    unknown = s.c.post("/api/v1/handoffs/0123456789abcdef/claim", headers=s.h("olga"))
    assert unknown.status_code == 404 and unknown.json()["code"] == "handoff_not_found"
    assert s.c.get("/api/v1/handoffs/0123456789abcdef", headers=s.h("olga")).status_code == 404
    bad = s.queue(status="lost")
    assert bad.status_code == 422 and set(bad.json()) >= {"code", "message"}
    assert s.queue(limit=10_000).status_code == 422
    assert s.queue(limit=s.rt.settings.handoff.max_page + 1).status_code == 200  # cut to the largest page
    assert s.c.post(f"/api/v1/handoffs/{rid}/close", json={"note": None}, headers=s.h("alice")).status_code == 403
    assert s.queue(priority=9).status_code == 422

    unknown_close = s.c.post("/api/v1/handoffs/0123456789abcdef/close", json={"note": None}, headers=s.h("olga"))
    assert unknown_close.status_code == 404, unknown_close.text
    claim = s.c.post(f"/api/v1/handoffs/{rid}/claim", headers=s.h("olga"))
    assert claim.status_code == 200 and claim.json()["status"] == "claimed"
    closed = s.c.post(f"/api/v1/handoffs/{rid}/close", json={"note": "called the user back"}, headers=s.h("olga"))
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    assert closed.json()["closed_by"] == "olga-key" and closed.json()["note"] == "called the user back"
    again = s.c.post(f"/api/v1/handoffs/{rid}/claim", headers=s.h("olga"))
    assert again.status_code == 409 and again.json()["code"] == "handoff_conflict"
    assert s.c.post(f"/api/v1/handoffs/{rid}/close", headers=s.h("olga")).status_code == 409
    too_long = s.c.post(f"/api/v1/handoffs/{rid}/close", json={"note": "x" * 1001}, headers=s.h("olga"))
    assert too_long.status_code == 422
    assert [e.action for e in s.rt.audit.query()][:2] == ["handoff.close", "handoff.claim"]
    assert _items(s, status="open") == [] and len(_items(s, status="closed")) == 1


def test_the_queue_pages_are_bounded(staged: Staged) -> None:
    s = staged
    for i in range(3):
        s.chat(f"person please {i}", analysis(intent="human_request"))
    s.rt.settings.handoff.max_page = 2
    cut = s.queue(limit=50).json()
    assert len(cut["items"]) == 2 and cut["next_offset"] == 2
    first = s.queue(limit=2).json()
    assert len(first["items"]) == 2 and first["total"] == 3 and first["next_offset"] == 2
    rest = s.queue(limit=2, offset=first["next_offset"]).json()
    assert len(rest["items"]) == 1 and rest["next_offset"] is None
    assert len({r["id"] for r in first["items"] + rest["items"]}) == 3


def test_a_sessions_emotions_oldest_first_for_its_owner_only(staged: Staged) -> None:
    s = staged
    sid = s.chat("hello there", analysis(emotion=Emotion("joy", "positive", 0.5)))["session_id"]
    s.chat("this is not working", analysis(emotion=SAD), session_id=sid)
    s.chat("still broken, I am upset", analysis(emotion=Emotion("anger", "very_negative", -0.9)), session_id=sid)

    r = s.c.get(f"/api/v1/sessions/{sid}/emotions", params={"user_id": "u1"}, headers=s.h("alice"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [t["emotion"]["label"] for t in body["turns"]] == ["joy", "sadness", "anger"]
    assert [t["emotion"]["polarity"] for t in body["turns"]] == ["positive", "negative", "very_negative"]
    assert body["negative_streak"] == 2 and body["deteriorating"] is False
    s.chat("worst service ever", analysis(emotion=SAD), session_id=sid)
    body = s.c.get(f"/api/v1/sessions/{sid}/emotions", params={"user_id": "u1"}, headers=s.h("alice")).json()
    assert body["negative_streak"] == 3 and body["deteriorating"] is True
    assert "negative_trend" in {r["reason"] for r in _items(s)}

    for who, params in (("bob", {"user_id": "u1"}), ("alice", {"user_id": "u2"}), ("vera", {"user_id": "u1"})):
        other = s.c.get(f"/api/v1/sessions/{sid}/emotions", params=params, headers=s.h(who))
        assert other.status_code == 404, (who, other.text)
        assert other.json() == {"code": "session_not_found", "message": f"no chat session with id {sid}"}
        assert s.c.get(f"/api/v1/sessions/{sid}/messages", params=params, headers=s.h(who)).status_code == 404
