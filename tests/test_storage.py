"""Storage on SQLite and on a real PostgreSQL server started by the test session."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.chat.pipeline import Turn
from ragvigil.chat.sessions import StoredMessage
from ragvigil.storage.db import Database, alembic_config, migrate
from ragvigil.storage.models import Chunk, Message
from tests.conftest import local_client, make_settings
from tests.realservers import ServerUnavailable, create_database, postgres_server

_counter = itertools.count()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rv.db'}"
    server = request.getfixturevalue("pg_server")
    return create_database(server, f"rv_test_{os.getpid()}_{next(_counter)}")


@pytest.fixture
def runtime(db_url: str, tmp_path: Path) -> Iterator[Runtime]:
    rt = Runtime(make_settings(tmp_path / "data", database_url=db_url))
    yield rt
    rt.close()


def test_migrations_create_the_schema_and_are_idempotent(db_url: str) -> None:
    db = Database(db_url)
    migrate(db.engine)
    migrate(db.engine)
    tables = set(inspect(db.engine).get_table_names())
    assert {"knowledge_bases", "documents", "chunks", "chat_sessions", "messages", "api_keys", "audit_log"} <= tables
    with db.engine.connect() as conn:
        assert (
            conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            == ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
        )
    db.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'wal.db'}")
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    db.dispose()


def test_ingest_dedupe_and_replace(runtime: Runtime) -> None:
    rt = runtime
    a = rt.ingestor.ingest_bytes("docs", "guide.md", "# 指南\n第一版内容。第二句。".encode())
    assert rt.ingestor.ingest_bytes("docs", "guide.md", "# 指南\n第一版内容。第二句。".encode()).outcome == "unchanged"
    b = rt.ingestor.ingest_bytes("docs", "guide.md", "# 指南\n第二版内容。".encode())
    assert (a.outcome, b.outcome) == ("created", "updated") and a.document_id == b.document_id
    with rt.db.session() as s:
        texts = list(s.scalars(select(Chunk.text).where(Chunk.document_id == a.document_id)))
    assert texts == ["第二版内容。"]
    rt.filler.drain()
    assert rt.ingestor.document("docs", a.document_id).vector_status == "ready"
    assert rt.retriever.search("docs", "第二版").hits[0].text == "第二版内容。"


def test_turns_persist_in_order_with_metadata(runtime: Runtime) -> None:
    rt = runtime
    rt.ingestor.ingest_bytes("default", "faq.md", b"# FAQ\nShipping takes three days. Returns are free.")
    first = rt.pipeline.run(Turn(message="How long does shipping take?", kb="default", user_id="alice"))
    rt.pipeline.run(Turn(message="Are returns free?", kb="default", session_id=first.session_id, user_id="alice"))
    msgs = rt.sessions.messages(first.session_id)
    assert [(m.seq, m.role) for m in msgs] == [(1, "user"), (2, "assistant"), (3, "user"), (4, "assistant")]
    assert msgs[0].content == "How long does shipping take?" and "three days" in msgs[1].content
    assert msgs[1].sources[0]["title"] == "FAQ" and msgs[1].degraded is False
    recorded_ms = msgs[1].latency_ms  # stored with the answer (its value is not asserted)
    assert recorded_ms is not None
    assert rt.sessions.history(first.session_id, 1) == [(m.role, m.content) for m in msgs[2:]]


def test_append_is_idempotent_by_message_id(runtime: Runtime) -> None:
    now = datetime.now(UTC)
    msgs = [StoredMessage("m1", "user", "hello", now), StoredMessage("m2", "assistant", "hi", now)]
    runtime.sessions.append("s1", "default", None, msgs, owner="anonymous")
    runtime.sessions.append("s1", "default", None, msgs, owner="anonymous")
    with runtime.db.session() as s:
        assert s.scalar(select(Message.id).where(Message.session_id == "s1").order_by(Message.seq.desc())) == "m2"
        assert len(list(s.scalars(select(Message.id)))) == 2


@pytest.mark.postgres
def test_turn_accepted_while_postgres_is_down_is_journaled_and_replayed(tmp_path: Path) -> None:
    """Stop the real server mid-conversation: the answer is still 200, and nothing is lost."""
    try:
        server_cm = postgres_server()
        url = server_cm.__enter__()
    except ServerUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    rt = Runtime(make_settings(tmp_path / "data", database_url=url))
    try:
        rt.ingestor.ingest_bytes("default", "faq.md", b"# FAQ\nShipping takes three days.")
        with local_client(create_app(runtime=rt)) as c:
            ok = c.post("/api/v1/chat", json={"message": "How long does shipping take?"}).json()
            sid = ok["session_id"]
            server_cm.__exit__(None, None, None)  # the database goes away
            server_cm = None
            down = c.post("/api/v1/chat", json={"message": "How long does shipping take, please?"})
            assert down.status_code == 200, down.text
            body = down.json()
            assert body["degraded"] and "three days" in body["answer"]
            assert any("journaled" in r for r in body["degraded_reasons"])
            assert len(rt.journal.pending()) == 1
            assert c.get("/health/ready").status_code == 503
            unavailable = c.get(f"/api/v1/sessions/{sid}/messages")
            assert unavailable.status_code == 503 and unavailable.json()["code"] == "dependency_unavailable"
            # the database is back (a fresh server holding the earlier data would do the same)
            server_cm = postgres_server()
            url2 = server_cm.__enter__()
            rt2 = Runtime(make_settings(tmp_path / "data", database_url=url2))
            try:
                assert rt2.replay_journal() == 1 and rt2.journal.pending() == []
                msgs = rt2.sessions.messages(body["session_id"])
                assert msgs[0].content == "How long does shipping take, please?"
                assert msgs[1].degraded is True
                assert rt2.replay_journal() == 0
            finally:
                rt2.close()
        assert sid
    finally:
        rt.close()
        if server_cm is not None:
            server_cm.__exit__(None, None, None)
