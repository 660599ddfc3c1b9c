"""Database down: turns are journaled, history reads show them (no gap, no duplicate, owners kept),
the journal is bounded with a clear 503, and the replay is idempotent. On SQLite and real PostgreSQL."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.chat.journal import Journal
from ragvigil.chat.pipeline import Turn
from ragvigil.chat.sessions import StoredMessage
from ragvigil.ops.metrics import REGISTRY
from ragvigil.storage.models import utcnow
from tests.conftest import local_client, make_settings
from tests.outages import RestartablePostgres, SqliteOutage, postgres_or_skip

FAQ = b"# FAQ\nShipping takes three days. Returns are free within thirty days."
ASK = "/api/v1/chat"


@dataclass
class Instance:
    rt: Runtime
    client: TestClient
    outage: SqliteOutage | RestartablePostgres

    def chat(self, message: str, user: str, session_id: str | None = None) -> dict:
        body = {"message": message, "user_id": user} | ({"session_id": session_id} if session_id else {})
        r = self.client.post(ASK, json=body)
        assert r.status_code == 200, r.text
        return r.json()

    def messages(self, session_id: str, user: str) -> list[dict]:
        r = self.client.get(f"/api/v1/sessions/{session_id}/messages", params={"user_id": user})
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def _instance(backend: str, tmp_path: Path, **settings: object) -> Iterator[Instance]:
    data = tmp_path / "data"
    pg = None
    if backend == "postgres":
        pg = postgres_or_skip()
        settings["database_url"] = pg.start()
    rt = Runtime(make_settings(data, **settings))
    outage = pg if pg is not None else SqliteOutage(data / "ragvigil.db", rt.db.engine)
    try:
        rt.ingestor.ingest_bytes("default", "faq.md", FAQ)
        with local_client(create_app(runtime=rt)) as c:
            yield Instance(rt, c, outage)
    finally:
        rt.close()
        if pg is not None:
            pg.close()


@pytest.fixture
def inst(backend: str, tmp_path: Path) -> Iterator[Instance]:
    yield from _instance(backend, tmp_path)


def _ids(msgs: list[dict]) -> list[str]:
    return [m["id"] for m in msgs]


def test_journaled_turns_show_in_history_while_the_database_is_down_and_before_replay(inst: Instance) -> None:
    rt = inst.rt
    s1 = inst.chat("How long does shipping take?", "alice")["session_id"]
    inst.outage.stop()
    try:
        more = inst.chat("Are returns free?", "alice", s1)
        assert more["degraded"] and more["session_id"] == s1
        s2_first = inst.chat("How long does shipping take?", "alice")  # a session opened during the outage
        s2 = s2_first["session_id"]
        assert len(rt.journal.pending()) == 2
        # the journal holds s2's beginning: alice reads all of it, bob is told it does not exist
        during = inst.messages(s2, "alice")
        assert [m["role"] for m in during] == ["user", "assistant"] and during[1]["id"] == s2_first["message_id"]
        assert inst.client.get(f"/api/v1/sessions/{s2}/messages", params={"user_id": "bob"}).status_code == 404
        # s1 began in the database: its older part is unknown now, so no history with a hole in it
        gap = inst.client.get(f"/api/v1/sessions/{s1}/messages", params={"user_id": "alice"})
        assert gap.status_code == 503 and gap.json()["code"] == "dependency_unavailable"
        # the next turn of s2 is answered with its journaled history, and says the database was missing
        turn = rt.pipeline.run(Turn(message="And returns?", kb="default", session_id=s2, user_id="alice"))
        assert turn.history == [(m["role"], m["content"]) for m in during]
        assert any("history unavailable" in r and "journaled turns only" in r for r in turn.degraded_reasons)
        # a stream continuing a session is not refused for the outage either
        with inst.client.stream(
            "POST", "/api/v1/chat/stream", json={"message": "Thanks", "session_id": s2, "user_id": "alice"}
        ) as r:
            assert r.status_code == 200 and "event: done" in r.read().decode()
    finally:
        inst.outage.start()
    # the database is back, the replay has not run: the history already has every turn, once
    s1_msgs, s2_msgs = inst.messages(s1, "alice"), inst.messages(s2, "alice")
    assert [m["role"] for m in s1_msgs] == ["user", "assistant"] * 2 and s1_msgs[3]["id"] == more["message_id"]
    assert len(s2_msgs) == 6 and len(set(_ids(s2_msgs))) == 6
    assert [m["created_at"] for m in s2_msgs] == sorted(m["created_at"] for m in s2_msgs)
    assert inst.client.get(f"/api/v1/sessions/{s2}/messages", params={"user_id": "bob"}).status_code == 404
    assert rt.replay_journal() == 4 and rt.journal.pending() == []
    assert inst.messages(s1, "alice") == s1_msgs and _ids(inst.messages(s2, "alice")) == _ids(s2_msgs)
    assert rt.replay_journal() == 0


def test_a_journaled_turn_of_alice_is_not_shown_to_bob_in_the_session_he_names(inst: Instance) -> None:
    s = inst.chat("How long does shipping take?", "alice")["session_id"]
    inst.outage.stop()
    try:
        inst.chat("Are returns free?", "bob", s)  # bob names alice's session while ownership cannot be checked
    finally:
        inst.outage.start()
    alice = inst.messages(s, "alice")
    assert len(alice) == 2 and "Are returns free?" not in [m["content"] for m in alice]
    assert inst.client.get(f"/api/v1/sessions/{s}/messages", params={"user_id": "bob"}).status_code == 404
    assert inst.rt.replay_journal() == 1
    assert len(inst.messages(s, "alice")) == 2  # bob's turn went to a session of his own


def test_a_full_journal_refuses_the_turn_with_503_and_retry_after(backend: str, tmp_path: Path) -> None:
    gen = _instance(backend, tmp_path, journal={"max_entries": 1, "retry_after_s": 7})
    inst = next(gen)
    try:
        inst.chat("Hello", "alice")  # the knowledge base is known before the outage
        inst.outage.stop()
        try:
            kept = inst.chat("How long does shipping take?", "alice")
            before = REGISTRY.get_sample_value("ragvigil_journal_full_total")
            full = inst.client.post(ASK, json={"message": "Are returns free?", "user_id": "alice"})
            assert full.status_code == 503, full.text
            assert full.json()["code"] == "journal_full" and full.headers["Retry-After"] == "7"
            assert REGISTRY.get_sample_value("ragvigil_journal_full_total") == before + 1
            assert REGISTRY.get_sample_value("ragvigil_journal_fill_ratio") == 1.0
            with inst.client.stream("POST", "/api/v1/chat/stream", json={"message": "Returns?"}) as r:
                events = r.read().decode()
            assert "journal_full" in events and "event: done" not in events
            assert len(inst.rt.journal.pending()) == 1  # nothing was kept silently past the bound
        finally:
            inst.outage.start()
        assert inst.rt.replay_journal() == 1
        assert _ids(inst.messages(kept["session_id"], "alice"))[1] == kept["message_id"]
        assert inst.chat("Are returns free?", "alice")["degraded"] is False
    finally:
        gen.close()


def test_replay_is_idempotent_across_a_crash_between_commit_and_unlink(tmp_path: Path) -> None:
    """A crash after the database took an entry but before its file was removed replays it again: still once."""
    rt = Runtime(make_settings(tmp_path / "data"))
    try:
        now = utcnow()
        msgs = [StoredMessage("u1", "user", "hi", now), StoredMessage("a1", "assistant", "hello", now)]
        path = rt.journal.write("s1", "default", "alice", msgs, owner="anonymous", new_session=True)
        copy = tmp_path / "copy.json"
        shutil.copy(path, copy)
        assert rt.replay_journal() == 1
        shutil.copy(copy, path)  # the unlink never reached the disk
        (path.parent / "x.tmp").write_text("{half")  # and a write cut short by the same crash
        rt.journal = Journal(path.parent)
        assert rt.journal.pending() == [path] and not (path.parent / "x.tmp").exists()
        rt.replay_journal()
        assert [m.id for m in rt.sessions.messages("s1")] == ["u1", "a1"]
        assert json.loads(copy.read_text())["new_session"] is True
    finally:
        rt.close()
