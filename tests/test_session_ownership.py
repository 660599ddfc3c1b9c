"""A chat session belongs to the key (or anonymous caller) and user_id that opened it.

Real keys in the staging profile, on SQLite and on a real PostgreSQL server.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import text

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.chat.sessions import SessionOwner, StoredMessage, key_owner
from ragvigil.ops.access import Role
from ragvigil.storage.db import Database, alembic_config, migrate
from tests.conftest import local_client, make_settings
from tests.realservers import create_database

_counter = itertools.count()
FAQ = b"# FAQ\nShipping takes three days. Returns are free within thirty days."


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rv.db'}"
    return create_database(request.getfixturevalue("pg_server"), f"rv_own_{os.getpid()}_{next(_counter)}")


class Staged:
    """A staging instance with one key per person and role."""

    def __init__(self, rt: Runtime, client: TestClient, keys: dict[str, str]) -> None:
        self.rt, self.c, self.keys = rt, client, keys

    def as_(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    def chat(self, who: str, message: str, **body: object) -> httpx.Response:
        return self.c.post("/api/v1/chat", json={"message": message, **body}, headers=self.as_(who))

    def stream(self, who: str, message: str, **body: object) -> httpx.Response:
        return self.c.post("/api/v1/chat/stream", json={"message": message, **body}, headers=self.as_(who))

    def messages(self, who: str, sid: str, **params: str) -> httpx.Response:
        return self.c.get(f"/api/v1/sessions/{sid}/messages", params=params, headers=self.as_(who))

    def timeline(self, who: str, sid: str, **params: str) -> httpx.Response:
        return self.c.get(f"/api/v1/sessions/{sid}/timeline", params=params, headers=self.as_(who))

    def audit(self, action: str = "session.read") -> list[dict]:
        return self.c.get("/api/v1/ops/audit", params={"action": action}, headers=self.as_("admin")).json()


PEOPLE = {
    "alice": Role.client,
    "bob": Role.client,
    "vera": Role.viewer,
    "victor": Role.viewer,
    "olga": Role.operator,
    "admin": Role.admin,
}


@pytest.fixture
def staged(db_url: str, tmp_path: Path) -> Iterator[Staged]:
    rt = Runtime(make_settings(tmp_path / "data", profile="staging", database_url=db_url))
    rt.ingestor.ingest_bytes("default", "faq.md", FAQ)
    keys = {name: rt.keys.create(f"{name}-key", role)[1] for name, role in PEOPLE.items()}
    try:
        with local_client(create_app(runtime=rt)) as c:
            yield Staged(rt, c, keys)
    finally:
        rt.close()


def _not_found(resp: httpx.Response, sid: str) -> None:
    """Exactly what an unknown session id answers: nothing says the session exists."""
    assert resp.status_code == 404, resp.text
    assert resp.json() == {"code": "session_not_found", "message": f"no chat session with id {sid}"}


def test_another_key_can_neither_read_nor_continue_a_session(staged: Staged) -> None:
    s = staged
    opened = s.chat("alice", "How long does shipping take?", user_id="alice-1")
    assert opened.status_code == 200, opened.text
    sid = opened.json()["session_id"]
    mine = s.messages("alice", sid, user_id="alice-1")
    assert mine.status_code == 200 and mine.json()[0]["content"] == "How long does shipping take?"

    _not_found(s.messages("bob", sid, user_id="alice-1"), sid)
    _not_found(s.messages("bob", sid), sid)
    _not_found(s.chat("bob", "And returns?", session_id=sid, user_id="alice-1"), sid)
    _not_found(s.stream("bob", "And returns?", session_id=sid, user_id="alice-1"), sid)
    _not_found(s.messages("vera", sid, user_id="alice-1"), sid)  # a viewer is no support reader
    _not_found(s.messages("bob", "0" * 32), "0" * 32)  # the unknown id: the same answer

    # the same key with another user_id is another owner
    _not_found(s.messages("alice", sid, user_id="alice-2"), sid)
    _not_found(s.messages("alice", sid), sid)
    _not_found(s.chat("alice", "And returns?", session_id=sid), sid)

    # the owner continues, on both routes, and nothing of the refused turns was stored
    assert s.chat("alice", "Are returns free?", session_id=sid, user_id="alice-1").status_code == 200
    streamed = s.stream("alice", "Within how many days?", session_id=sid, user_id="alice-1")
    assert streamed.status_code == 200 and "event: done" in streamed.text
    contents = [m["content"] for m in s.messages("alice", sid, user_id="alice-1").json()[::2]]
    assert contents == ["How long does shipping take?", "Are returns free?", "Within how many days?"]
    assert s.audit() == []  # owners reading their own sessions are not support reads


def test_timeline_follows_the_same_rule(staged: Staged) -> None:
    s = staged
    sid = s.chat("vera", "How long does shipping take?").json()["session_id"]
    own = s.timeline("vera", sid)
    assert own.status_code == 200 and own.json()["turns"][0]["question"] == "How long does shipping take?"
    _not_found(s.timeline("victor", sid), sid)
    _not_found(s.timeline("vera", sid, user_id="someone-else"), sid)
    support = s.timeline("olga", sid)
    assert support.status_code == 200 and len(support.json()["turns"]) == 1
    trail = s.audit()
    assert [(e["actor"], e["target"], e["detail"]["view"]) for e in trail] == [
        ("olga-key", f"session:{sid}", "timeline")
    ]


def test_a_client_reads_its_own_timeline_and_trace(staged: Staged) -> None:
    s = staged
    opened = s.chat("alice", "How long does shipping take?")
    sid, rid = opened.json()["session_id"], opened.headers["x-request-id"]
    turns = s.timeline("alice", sid).json()["turns"]
    assert [t["request_id"] for t in turns] == [rid]
    assert s.c.get(f"/api/v1/traces/{rid}", headers=s.as_("alice")).status_code == 200
    _not_found(s.timeline("bob", sid), sid)
    assert s.c.get(f"/api/v1/traces/{rid}", headers=s.as_("bob")).status_code == 404


def test_operator_and_admin_may_read_for_support_audited_but_not_continue(staged: Staged) -> None:
    s = staged
    sid = s.chat("alice", "How long does shipping take?", user_id="a1").json()["session_id"]
    for reader in ("olga", "admin"):
        r = s.messages(reader, sid)
        assert r.status_code == 200 and r.json()[0]["content"] == "How long does shipping take?"
    trail = s.audit()
    alice_key = next(k.id for k in s.rt.keys.list() if k.name == "alice-key")
    assert [(e["actor"], e["role"], e["result"], e["target"]) for e in trail] == [
        ("admin-key", "admin", "ok", f"session:{sid}"),
        ("olga-key", "operator", "ok", f"session:{sid}"),
    ]
    assert trail[0]["source"] == "127.0.0.1" and trail[0]["detail"] == {
        "view": "messages",
        "owner": f"key:{alice_key}",
    }
    _not_found(s.chat("olga", "Are returns free?", session_id=sid, user_id="a1"), sid)
    _not_found(s.stream("admin", "Are returns free?", session_id=sid, user_id="a1"), sid)
    assert len(s.messages("alice", sid, user_id="a1").json()) == 2
    _not_found(s.messages("olga", "1" * 32), "1" * 32)  # support cannot probe ids either


def test_the_openai_route_opens_a_session_of_the_caller(staged: Staged) -> None:
    s = staged
    r = s.c.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "How long does shipping take?"}], "user": "u9"},
        headers=s.as_("alice"),
    )
    assert r.status_code == 200, r.text
    sid = r.json()["ragvigil"]["session_id"]
    assert s.messages("alice", sid, user_id="u9").status_code == 200
    _not_found(s.messages("bob", sid, user_id="u9"), sid)
    _not_found(s.chat("bob", "And returns?", session_id=sid, user_id="u9"), sid)


def test_sessions_that_predate_owners_are_legacy(db_url: str, tmp_path: Path) -> None:
    """Migration 0004: old rows are nobody's (readable by support, audited; never continued)."""
    db = Database(db_url)
    cfg = alembic_config(db_url)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
        conn.execute(
            text(
                "INSERT INTO chat_sessions (id, user_id, kb, created_at, updated_at) VALUES (:i, NULL, 'default', :t, :t)"
            ),
            {"i": "old-session", "t": datetime.now(UTC)},
        )
        conn.execute(
            text(
                "INSERT INTO messages (id, session_id, seq, role, content, sources, degraded, created_at)"
                " VALUES ('m-old', 'old-session', 1, 'user', 'from before', '[]', false, :t)"
            ),
            {"t": datetime.now(UTC)},
        )
    migrate(db.engine)
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT owner FROM chat_sessions WHERE id = 'old-session'")).scalar() == "legacy"
    db.dispose()

    rt = Runtime(make_settings(tmp_path / "data", profile="staging", database_url=db_url))
    rt.ingestor.ingest_bytes("default", "faq.md", FAQ)
    keys = {name: rt.keys.create(f"{name}-key", role)[1] for name, role in PEOPLE.items()}
    try:
        with local_client(create_app(runtime=rt)) as c:
            s = Staged(rt, c, keys)
            _not_found(s.messages("alice", "old-session"), "old-session")
            _not_found(s.chat("alice", "still there?", session_id="old-session"), "old-session")
            assert [m["content"] for m in s.messages("olga", "old-session").json()] == ["from before"]
            assert s.audit()[0]["detail"] == {"view": "messages", "owner": "legacy"}
    finally:
        rt.close()


def test_journal_keeps_the_owner_and_never_adds_to_another_owners_session(db_url: str, tmp_path: Path) -> None:
    """Replayed turns keep their owner; one that is not the session owner's gets a session of its own."""
    rt = Runtime(make_settings(tmp_path / "data", database_url=db_url))
    try:
        now = datetime.now(UTC)
        alice, bob = key_owner("a" * 32), key_owner("b" * 32)
        rt.sessions.append("s-alice", "default", "u1", [StoredMessage("m1", "user", "alice's", now)], owner=alice)
        # bob's turns were taken while the database was down, so nobody could check the session's owner
        rt.journal.write("s-bob", "default", None, [StoredMessage("m2", "user", "bob's own", now)], owner=bob)
        rt.journal.write("s-alice", "default", "u1", [StoredMessage("m3", "user", "bob's", now)], owner=bob)
        rt.journal.write("s-alice", "default", "u1", [StoredMessage("m4", "user", "alice again", now)], owner=alice)
        rt.journal.write("s-old", "default", None, [StoredMessage("m5", "user", "old entry", now)])
        assert rt.replay_journal() == 4 and rt.journal.pending() == []

        assert [m.content for m in rt.sessions.messages("s-alice")] == ["alice's", "alice again"]
        assert rt.sessions.owner("s-alice").owner == alice
        assert rt.sessions.owner("s-bob").owner == bob
        assert rt.sessions.owner("s-old").owner == "legacy"
        with rt.db.session() as s:
            moved_to = s.execute(text("SELECT session_id FROM messages WHERE id = 'm3'")).scalar()
        assert moved_to not in ("s-alice", None)
        assert rt.sessions.owner(moved_to) == SessionOwner(bob, "u1")
        # a replay of the same entry again (a crash before its file was removed) adds nothing anywhere
        again = rt.sessions.append("s-alice", "default", "u1", [StoredMessage("m3", "user", "bob's", now)], owner=bob)
        assert again == moved_to and len(rt.sessions.messages(moved_to)) == 1
    finally:
        rt.close()


def test_anonymous_callers_own_sessions_by_user_id(anon_client: TestClient) -> None:
    """Auth off (development): every keyless caller is anonymous, so the user_id tells sessions apart."""
    client = anon_client
    sid = client.post("/api/v1/chat", json={"message": "专业版年付多少钱？", "user_id": "ann"}).json()["session_id"]
    assert client.get(f"/api/v1/sessions/{sid}/messages", params={"user_id": "ann"}).status_code == 200
    for other in ({"user_id": "ben"}, {}):
        _not_found(client.get(f"/api/v1/sessions/{sid}/messages", params=other), sid)
        _not_found(client.post("/api/v1/chat", json={"message": "和月付比呢？", "session_id": sid, **other}), sid)
    follow = client.post("/api/v1/chat", json={"message": "和月付比呢？", "session_id": sid, "user_id": "ann"})
    assert follow.status_code == 200 and follow.json()["session_id"] == sid
