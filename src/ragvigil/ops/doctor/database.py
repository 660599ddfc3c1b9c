"""The database group: reachable (named by host:port/database or file, never with its password) and at head."""

from __future__ import annotations

import math
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from ragvigil.config import Settings
from ragvigil.ops.doctor.options import DoctorOptions
from ragvigil.ops.doctor.result import CheckResult, fail, ok, warn
from ragvigil.storage.schema import MIGRATE_COMMAND, engine_state


def describe_target(url: str) -> str:
    """Where the database is, for a message: ``postgresql at 127.0.0.1:5432/ragvigil`` or the SQLite path."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return f"sqlite at {u.database or ':memory:'}"
    return f"{u.get_backend_name()} at {u.host or 'localhost'}:{u.port or 5432}/{u.database or ''}"


def scrub(message: str, url: str) -> str:
    """An error text with the URL's password blanked, in case a driver quotes it."""
    password = make_url(url).password
    return message.replace(str(password), "***") if password else message


def doctor_engine(url: str, timeout_s: float) -> Engine:
    """An engine that gives up connecting after ``timeout_s`` (no pool: the doctor connects once or twice)."""
    if make_url(url).get_backend_name() == "sqlite":
        return create_engine(url, poolclass=NullPool, connect_args={"timeout": timeout_s})
    return create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": max(1, math.ceil(timeout_s))})


def sqlite_missing(url: str) -> Path | None:
    """The SQLite file the URL names when it does not exist (connecting would create an empty one)."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        path = Path(u.database)
        return None if path.exists() else path
    return None


def check_database(settings: Settings, options: DoctorOptions) -> list[CheckResult]:
    url = settings.db_url
    target = describe_target(url)
    if (missing := sqlite_missing(url)) is not None:
        fix = f"run `{MIGRATE_COMMAND}`, or point data_dir / database_url at the right place"
        if settings.database.migrate_on_start:
            return [warn("database", f"no database file at {missing} (the first start creates it)", fix)]
        return [fail("database", f"no database file at {missing}", fix)]
    engine = doctor_engine(url, options.timeout_s)
    try:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            state = engine_state(engine)
        except SQLAlchemyError as exc:
            found = f"{target} unreachable: {scrub(str(exc.orig or exc).strip().splitlines()[0], url)}"
            fix = f"start the database server at {target.split(' at ', 1)[1]}, or correct database_url"
            return [fail("database", found, fix)]
    finally:
        engine.dispose()
    rows = [ok("database", f"{target} reachable")]
    if state.newer:
        rows.append(fail("database.schema", state.describe(), "upgrade ragvigil to the release that wrote this schema"))
    elif state.behind and settings.database.migrate_on_start:
        rows.append(warn("database.schema", state.describe(), f"applied at the next start, or run `{MIGRATE_COMMAND}`"))
    elif state.behind:
        rows.append(
            fail(
                "database.schema",
                state.describe(),
                f"run `{MIGRATE_COMMAND}` (database.migrate_on_start is off: replicas refuse to start until then)",
            )
        )
    else:
        rows.append(ok("database.schema", f"at the newest migration {state.head}"))
    return rows
