"""Migration 0005 (turn analysis on messages, the hand-off queue) upgrades and downgrades, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from ragvigil.storage.db import Database, alembic_config
from tests.realservers import create_database

_counter = itertools.count()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rv.db'}"
    return create_database(request.getfixturevalue("pg_server"), f"rv_handoff_mig_{os.getpid()}_{next(_counter)}")


def _columns(db: Database, table: str) -> set[str]:
    return {c["name"] for c in inspect(db.engine).get_columns(table)}


def test_0005_upgrades_with_rows_in_place_and_downgrades(db_url: str) -> None:
    db = Database(db_url)
    cfg = alembic_config(db_url)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
    assert "analysis" not in _columns(db, "messages")
    now = datetime.now(UTC)
    with db.engine.begin() as conn:  # a conversation stored by the previous release
        conn.execute(
            text(
                "INSERT INTO chat_sessions (id, owner, kb, created_at, updated_at) VALUES ('s1', 'anonymous', 'd', :t, :t)"
            ),
            {"t": now},
        )
        conn.execute(
            text(
                "INSERT INTO messages (id, session_id, seq, role, content, sources, degraded, created_at) "
                "VALUES ('m1', 's1', 1, 'user', 'hi', '[]', false, :t)"
            ),
            {"t": now},
        )

    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0005")
    assert {"analysis", "flagged"} <= _columns(db, "messages")
    assert "ix_messages_flagged" in {i["name"] for i in inspect(db.engine).get_indexes("messages")}
    assert {"id", "session_id", "reason", "priority", "status", "closed_by", "note"} <= _columns(db, "handoffs")
    with db.engine.begin() as conn:
        assert conn.execute(text("SELECT analysis, flagged FROM messages WHERE id = 'm1'")).one() == (None, None)
        conn.execute(
            text(
                "INSERT INTO handoffs (id, session_id, owner, reason, priority, status, created_at, updated_at) "
                "VALUES ('h1', 's1', 'anonymous', 'crisis', 1, 'open', :t, :t)"
            ),
            {"t": now},
        )

    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004")
    assert "handoffs" not in inspect(db.engine).get_table_names()
    assert not {"analysis", "flagged"} & _columns(db, "messages")
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT content FROM messages WHERE id = 'm1'")).scalar() == "hi"

    with db.engine.begin() as conn:  # and up again
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        assert (
            conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            == ScriptDirectory.from_config(cfg).get_current_head()
        )
    db.dispose()
