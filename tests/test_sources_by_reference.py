"""An answer's sources are stored by reference and read back as the chat response gave them.

A source whose chunk was deleted or replaced since reads as removed (its title kept), never an
error; rows written before migration 0009 keep their copied sources and read as before; reading a
conversation resolves the references of all its messages with one query. SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import event, select, text

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.chat.sessions import SessionStore
from ragvigil.storage.db import Database, alembic_config
from ragvigil.storage.models import Message
from tests.conftest import local_client, make_settings
from tests.realservers import create_database

FAQ = (
    b"# Shipping\nShipping takes three days within the country. Orders placed before noon leave the warehouse "
    b"the same day; later orders leave the next working day. Parcels are tracked from the moment they leave, "
    b"and the tracking link arrives by e-mail. Remote islands may take two days longer, and customs may hold "
    b"parcels sent abroad for another week, which the carrier cannot shorten.\n\n"
    b"# Returns\nReturns are accepted within thirty days of delivery.\n"
)
QUESTION = "How long does shipping take?"
_counter = itertools.count()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rv.db'}"
    return create_database(request.getfixturevalue("pg_server"), f"rv_refs_{os.getpid()}_{next(_counter)}")


@pytest.fixture
def rt(db_url: str, tmp_path: Path) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path / "data", database_url=db_url))
    runtime.ingestor.ingest_bytes("default", "faq.md", FAQ)
    yield runtime
    runtime.close()


def _chat(rt: Runtime, session_id: str | None = None) -> dict:
    with local_client(create_app(runtime=rt)) as c:
        body = {"message": QUESTION} | ({"session_id": session_id} if session_id else {})
        resp = c.post("/api/v1/chat", json=body)
        assert resp.status_code == 200, resp.text
        return resp.json()


def _messages(rt: Runtime, session_id: str) -> list[dict]:
    with local_client(create_app(runtime=rt)) as c:
        resp = c.get(f"/api/v1/sessions/{session_id}/messages")
        assert resp.status_code == 200, resp.text
        return resp.json()


def test_an_answer_is_stored_by_reference_and_reads_back_as_the_chat_response_gave_it(rt: Runtime) -> None:
    turn = _chat(rt)
    assert turn["sources"] and turn["sources"][0]["snippet"].startswith("Shipping takes three days")
    with rt.db.session() as s:
        row = s.get(Message, turn["message_id"])
        assert row is not None
        stored_refs, stored_copies = row.source_refs, row.sources
    assert stored_copies == []
    assert stored_refs is not None and len(stored_refs) == len(turn["sources"])
    assert "Shipping takes three days" not in json.dumps(stored_refs)  # no snippet copied into the message
    assert {r["chunk_id"] for r in stored_refs} == {s["chunk_id"] for s in turn["sources"]}
    answer = _messages(rt, turn["session_id"])[1]
    assert answer["sources"] == turn["sources"]
    # the bytes a turn's sources take (a 300-character snippet each): the reference is well under half the copy
    assert len(json.dumps(stored_refs)) * 2 < len(json.dumps(turn["sources"]))


def test_a_source_replaced_or_deleted_since_reads_as_removed_with_its_title(rt: Runtime) -> None:
    first = _chat(rt)
    title = first["sources"][0]["title"]
    rt.ingestor.ingest_bytes("default", "faq.md", FAQ.replace(b"three", b"four"))  # a new version: new chunks
    second = _chat(rt, first["session_id"])
    answers = [m for m in _messages(rt, first["session_id"]) if m["role"] == "assistant"]
    old, new = answers[0]["sources"], answers[1]["sources"]
    assert [s.get("removed") for s in old] == [True] * len(old)
    assert (
        old[0]["title"] == title and old[0]["snippet"] == "" and old[0]["chunk_id"] == first["sources"][0]["chunk_id"]
    )
    assert new == second["sources"]
    with rt.db.session() as s:
        doc_id = s.scalar(select(Message.source_refs).where(Message.id == second["message_id"]))[0]["document_id"]
    rt.ingestor.delete_document("default", doc_id)
    answers = [m for m in _messages(rt, first["session_id"]) if m["role"] == "assistant"]
    assert all(s.get("removed") for m in answers for s in m["sources"])
    assert answers[1]["sources"][0]["title"] == second["sources"][0]["title"]


def test_rows_with_copied_sources_read_as_before(rt: Runtime) -> None:
    copied = {"n": 1, "document_id": "d-old", "chunk_id": 7, "title": "Old", "source": "old.md", "anchor": "Old",
              "score": 0.5, "bm25_score": 1.0, "vector_score": None, "cited": True, "snippet": "kept as it was",
              "quality": None, "warnings": []}  # fmt: skip
    turn = _chat(rt)
    with rt.db.session(write=True) as s:
        s.add(Message(id="legacy-a", session_id=turn["session_id"], seq=99, role="assistant", content="old answer",
                      sources=[copied], created_at=datetime.now(UTC)))  # fmt: skip
    msgs = _messages(rt, turn["session_id"])
    assert msgs[-1]["sources"] == [copied]
    assert msgs[1]["sources"] == turn["sources"]


def test_one_query_resolves_the_sources_of_a_whole_conversation(rt: Runtime) -> None:
    def statements(session_id: str) -> int:
        seen: list[str] = []

        def count(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
            seen.append(statement)

        event.listen(rt.db.engine, "before_cursor_execute", count)
        try:
            rows = SessionStore(rt.db).messages(session_id)
        finally:
            event.remove(rt.db.engine, "before_cursor_execute", count)
        assert all(s for r in rows if r.role == "assistant" for s in r.sources)
        return len([s for s in seen if "chunks" in s])

    short = _chat(rt)["session_id"]
    long = _chat(rt)["session_id"]
    for _ in range(4):
        _chat(rt, long)
    assert statements(short) == statements(long) == 1


def test_a_database_at_0007_upgrades_and_its_copied_sources_still_read(db_url: str) -> None:
    db = Database(db_url)
    cfg = alembic_config(db.engine.url.render_as_string(hide_password=False))
    copied = [{"n": 1, "document_id": "d", "chunk_id": 1, "title": "T", "snippet": "old copy"}]
    try:
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0007")
            conn.execute(
                text(
                    "INSERT INTO chat_sessions (id, owner, kb, created_at, updated_at) VALUES ('s', 'o', 'default', :t, :t)"
                ),
                {"t": datetime.now(UTC)},
            )
            conn.execute(
                text(
                    "INSERT INTO messages (id, session_id, seq, role, content, sources, degraded, created_at) "
                    "VALUES ('m', 's', 1, 'assistant', 'a', :src, false, :t)"
                ),
                {"src": json.dumps(copied), "t": datetime.now(UTC)},
            )
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        [row] = SessionStore(db).messages("s")
        assert row.sources == copied and row.source_refs is None
    finally:
        db.dispose()
