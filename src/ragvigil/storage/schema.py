"""Whether a database holds the newest ragvigil schema, asked without changing anything.

Why: a read-only command (``ask``, ``search``) pointed at the wrong or a fresh data dir should
say so and how to fix it, not quietly create an empty database and answer "could not find".
"""

from __future__ import annotations

from pathlib import Path

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from ragvigil.storage.db import alembic_config, make_engine


def schema_problem(url: str) -> str | None:
    """None when the database is at the newest revision, else what is wrong, in words.

    Raises SQLAlchemyError when the database cannot be reached.
    """
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return f"there is no database at {url.removeprefix('sqlite:///')}"
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    if current is None:
        return "the database has no ragvigil schema yet"
    if current != head:
        return f"the database schema is at revision {current}, the newest is {head}"
    return None
