"""What the doctor and schema-refusal tests share: a database at a chosen migration, rows by check name."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, text

from ragvigil.ops.doctor import CheckResult
from ragvigil.storage.db import alembic_config


def migrate_to(url: str, revision: str) -> None:
    """The database at ``url`` brought to ``revision`` (created when it is a fresh SQLite file)."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)


def stamp_unknown(url: str, revision: str = "0099") -> None:
    """Record a revision this code does not have, as a newer ragvigil's migration would."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    finally:
        engine.dispose()


def rows(results: list[CheckResult], check: str) -> list[CheckResult]:
    found = [r for r in results if r.check == check]
    assert found, f"no {check!r} row in {[r.check for r in results]}"
    return found


def row(results: list[CheckResult], check: str) -> CheckResult:
    (only,) = rows(results, check)
    return only
