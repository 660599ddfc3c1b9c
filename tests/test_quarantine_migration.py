"""Migration 0006 (document quality and quarantine) upgrades with documents in place and downgrades,
on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text

from ragvigil.storage.db import Database, alembic_config
from tests.realservers import create_database

_counter = itertools.count()
COLUMNS = {"quality", "quarantined", "quarantine_reason", "released_by", "released_at"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rv.db'}"
    return create_database(request.getfixturevalue("pg_server"), f"rv_quarantine_mig_{os.getpid()}_{next(_counter)}")


def _upgrade(db: Database, cfg, revision: str) -> None:  # type: ignore[no-untyped-def]
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def test_0006_keeps_stored_documents_served_and_downgrades(db_url: str) -> None:
    db = Database(db_url)
    cfg = alembic_config(db_url)
    _upgrade(db, cfg, "0005")
    now = datetime.now(UTC)
    with db.engine.begin() as conn:  # a document stored by the previous release
        conn.execute(text("INSERT INTO knowledge_bases (id, name, created_at) VALUES (1, 'help', :t)"), {"t": now})
        conn.execute(
            text(
                "INSERT INTO documents (id, kb_id, source, title, content_hash, status, vector_status, warnings, "
                "chunk_count, size_bytes, created_at, updated_at) "
                "VALUES ('d1', 1, 'faq.md', 'FAQ', 'h', 'ready', 'ready', '[]', 0, 10, :t, :t)"
            ),
            {"t": now},
        )

    _upgrade(db, cfg, "0006")
    assert {c["name"] for c in inspect(db.engine).get_columns("documents")} >= COLUMNS
    with db.engine.begin() as conn:
        row = conn.execute(text("SELECT quality, quarantined, quarantine_reason FROM documents WHERE id = 'd1'")).one()
        assert (row[0], bool(row[1]), row[2]) == ("clean", False, None)  # served as before
        conn.execute(text("UPDATE documents SET quarantined = :q WHERE id = 'd1'"), {"q": True})

    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0005")
    assert not COLUMNS & {c["name"] for c in inspect(db.engine).get_columns("documents")}
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT source FROM documents WHERE id = 'd1'")).scalar() == "faq.md"

    _upgrade(db, cfg, "0006")  # and up again
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0006"
    db.dispose()
