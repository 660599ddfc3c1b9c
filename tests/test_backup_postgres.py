"""Backups of an instance on a real PostgreSQL server: pg_dump in a snapshot, verify into scratch, restore exactly."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from ragvigil.app import Runtime
from ragvigil.knowledge.smoke import retrieval_smoke
from ragvigil.ops.backup import RestoreRefused, create_backup, restore_backup, verify_backup
from tests.backup_cases import assert_same_service, members, populate
from tests.conftest import make_settings
from tests.realservers import create_database

DOCS = {
    "export.md": "# Export\n\nExport your notes from Settings → Export. Markdown and PDF are supported.\n",
    "pricing.md": "# 价格\n\n专业版年付 199 元，团队版每人每年 299 元。学生免费。\n",
    "mobile.md": "# Mobile\n\nOn mobile, open the menu and tap Export to share your notes as a file.\n",
}


def _db(pg_server: str) -> str:
    return create_database(pg_server, "bk_" + uuid.uuid4().hex[:10])


def test_a_postgres_round_trip_leaves_the_service_exactly_as_it_was(pg_server: str, tmp_path: Path) -> None:
    rt = Runtime(make_settings(tmp_path / "src", database_url=_db(pg_server)))
    try:
        for name, text in DOCS.items():
            rt.ingestor.ingest_bytes("default", name, text.encode())
        rt.filler.drain()
        state = populate(rt)
        result = create_backup(rt.settings, flush_vectors=rt.vectors.flush)
    finally:
        rt.close()
    m = result.manifest
    assert m.backend == "postgresql" and m.row_counts["chat_sessions"] == 2 and m.row_counts["messages"] == 8
    assert "database/postgres.dump" in members(result.path)
    assert members(result.path)["database/postgres.dump"][:5] == b"PGDMP"  # pg_dump's custom format

    report = verify_backup(result.path, rt.settings, scratch_database_url=_db(pg_server), smoke=retrieval_smoke)
    assert report.ok, report.error
    joined = " | ".join(report.checks)
    assert "pg_restore --list ok" in joined and "restored into the scratch database" in joined
    assert "retrieval smoke test: chunk" in joined

    fresh = make_settings(tmp_path / "restored", database_url=_db(pg_server))
    restore_backup(result.path, fresh)
    rt2 = Runtime(fresh)
    try:
        assert_same_service(rt2, state)
    finally:
        rt2.close()
    # the database now holds data: a second restore there needs --force
    again = make_settings(tmp_path / "again", database_url=fresh.database_url.get_secret_value())
    with pytest.raises(RestoreRefused, match="not empty"):
        restore_backup(result.path, again)
