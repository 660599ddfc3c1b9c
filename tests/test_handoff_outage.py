"""A user message keeps its analysis (database, journal, replay), and a hand-off decided while the
database is really down (SQLite file taken away, PostgreSQL stopped) is spooled and written once it is back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.chat.handoff import Handoffs
from ragvigil.chat.handoff.stage import NOTICE
from ragvigil.chat.understanding import Emotion, TurnAnalysis
from ragvigil.storage.models import HandoffRecord, Message
from tests.conftest import admin_key, auth, local_client, make_settings
from tests.handoff_cases import CRISIS, FAQ, HUMAN, Given, understand_as
from tests.outages import RestartablePostgres, SqliteOutage, postgres_or_skip


@dataclass
class Instance:
    rt: Runtime
    client: TestClient
    outage: SqliteOutage | RestartablePostgres
    parts: Handoffs
    given: Given

    def chat(self, message: str, session_id: str | None = None) -> dict:
        body = {"message": message, "user_id": "u1"} | ({"session_id": session_id} if session_id else {})
        r = self.client.post("/api/v1/chat", json=body)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def inst(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Instance]:
    data, settings, pg = tmp_path / "data", {}, None
    if request.param == "postgres":
        pg = postgres_or_skip()
        settings["database_url"] = pg.start()
    rt = Runtime(make_settings(data, **settings))
    outage = pg if pg is not None else SqliteOutage(data / "ragvigil.db", rt.db.engine)
    given = Given()
    parts = understand_as(rt, given)  # the test's analysis
    try:
        rt.ingestor.ingest_bytes("default", "faq.md", FAQ)
        with local_client(create_app(runtime=rt)) as c:
            warm = c.post("/api/v1/chat", json={"message": "How long does shipping take?", "user_id": "u0"})
            assert warm.status_code == 200, warm.text  # the knowledge base is known before the outage
            given.analysis = HUMAN
            yield Instance(rt, c, outage, parts, given)
    finally:
        rt.close()
        if pg is not None:
            pg.close()


def _stored(rt: Runtime, message_id: str) -> Message | None:
    with rt.db.session() as s:
        return s.get(Message, message_id)


def _records(inst: Instance) -> list[HandoffRecord]:
    with inst.rt.db.session() as s:
        return list(s.query(HandoffRecord))


def _user_message(rt: Runtime, session_id: str) -> Message:
    return next(m for m in rt.sessions.messages(session_id) if m.role == "user")


def test_the_user_message_stores_its_analysis_and_flag(inst: Instance) -> None:
    inst.given.analysis = CRISIS
    out = inst.chat("I have been saving up my pills")
    user = _user_message(inst.rt, out["session_id"])
    assert user.analysis == CRISIS.to_dict() and user.flagged == "self_harm"
    answer = _stored(inst.rt, out["message_id"])
    assert answer is not None and answer.analysis is None and answer.flagged is None
    inst.given.analysis = TurnAnalysis(emotion=Emotion("neutral", "neutral", 0.0))
    calm = inst.chat("How long does shipping take?")
    assert _user_message(inst.rt, calm["session_id"]).flagged is None
    # what an operator asks for: the flagged turns, by the indexed column, without reading any text
    with inst.rt.db.session() as s:
        assert [m.id for m in s.query(Message).filter(Message.flagged == "self_harm")] == [user.id]
    assert [r.reason for r in _records(inst)] == ["crisis"]


def test_a_journaled_turn_keeps_its_analysis_through_the_replay(inst: Instance) -> None:
    inst.given.analysis = CRISIS
    inst.outage.stop()
    try:
        out = inst.chat("I have been saving up my pills")
        assert out["degraded"]
        [entry] = inst.rt.journal.pending()
        journaled = json.loads(entry.read_text(encoding="utf-8"))["messages"][0]
        assert journaled["analysis"] == CRISIS.to_dict() and journaled["flagged"] == "self_harm"
    finally:
        inst.outage.start()
    assert inst.rt.replay_journal() == 1
    user = _user_message(inst.rt, out["session_id"])
    assert user.analysis == CRISIS.to_dict() and user.flagged == "self_harm"


def test_a_handoff_decided_while_the_database_is_down_is_written_once_it_is_back(inst: Instance) -> None:
    spool = inst.parts.store.spool
    assert spool is not None
    key = admin_key(inst.rt)
    inst.outage.stop()
    try:
        out = inst.chat("Let me talk to a real person")
        assert out["degraded"] and out["answer"].endswith(NOTICE["en"])  # the user is told all the same
        assert len(spool.pending()) == 1
        down = inst.client.get("/api/v1/handoffs", headers=auth(key))
        assert down.status_code == 503 and down.headers["Retry-After"], down.text
        inst.parts.replayer.tick()  # a pass while it is still down: the spool keeps it
        assert len(spool.pending()) == 1
    finally:
        inst.outage.start()
    inst.parts.replayer.tick()
    assert spool.pending() == []
    with inst.rt.db.session() as s:
        [record] = s.query(HandoffRecord).all()
        assert (record.reason, record.priority, record.status) == ("human_request", 3, "open")
        assert record.session_id == out["session_id"]
    inst.parts.replayer.tick()  # nothing left: nothing written twice
    with inst.rt.db.session() as s:
        assert s.query(HandoffRecord).count() == 1
    # the next trigger of the session joins the record written from the spool
    inst.chat("A person, please", out["session_id"])
    with inst.rt.db.session() as s:
        assert s.query(HandoffRecord).count() == 1

    queue = inst.client.get("/api/v1/handoffs", headers=auth(key)).json()["items"]
    assert [r["reason"] for r in queue] == ["human_request"]
