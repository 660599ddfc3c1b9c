"""The database part of a backup: a consistent copy, its row counts and schema revision, and its restore.

SQLite: the online backup API (``sqlite3.Connection.backup``), which copies a consistent snapshot
while the service writes (WAL mode); a file copy of a WAL database can miss committed pages.
PostgreSQL: ``pg_dump -Fc`` inside an exported snapshot, so the row counts of the manifest are
those of the dump itself. The password goes to ``pg_dump``/``pg_restore`` in ``PGPASSWORD``,
never on the command line (where ``ps`` shows it).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, make_url

from ragvigil.ops.backup.errors import BackupError, BackupInvalid
from ragvigil.storage.db import alembic_config

PG_TIMEOUT_S = 3600  # a dump or restore taking longer than an hour is stuck, not slow


@dataclass
class DatabaseCopy:
    path: Path
    row_counts: dict[str, int]
    revision: str | None


def backend_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(database)


def known_revisions() -> set[str]:
    """Every migration this code knows: a backup at another revision comes from a newer ragvigil."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return {rev.revision for rev in script.walk_revisions()}


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


# -- SQLite ----------------------------------------------------------------
def sqlite_counts(conn: sqlite3.Connection) -> tuple[dict[str, int], str | None]:
    tables = [
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")
    ]
    counts = {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in sorted(tables)}
    revision = None
    if "alembic_version" in counts:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        revision = row[0] if row else None
    return counts, revision


def backup_sqlite(url: str, dest: Path) -> DatabaseCopy:
    """Copy the live database with the online backup API; counts are read from the copy."""
    src_path = sqlite_path(url)
    if not src_path.exists():
        raise BackupError(f"the SQLite database {src_path} does not exist")
    src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst, pages=4096)  # in steps: writers get the lock between them
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
            counts, revision = sqlite_counts(dst)
        finally:
            dst.close()
    finally:
        src.close()
    return DatabaseCopy(dest, counts, revision)


def check_sqlite(path: Path, archive: Path) -> tuple[dict[str, int], str | None]:
    """``PRAGMA integrity_check`` of a restored copy, then its counts."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        try:
            result = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:
            raise BackupInvalid(archive, "database integrity", str(exc)) from exc
        if result != ["ok"]:
            raise BackupInvalid(archive, "database integrity", "; ".join(result[:5]))
        return sqlite_counts(conn)
    finally:
        conn.close()


def restore_sqlite(copy: Path, url: str) -> Path:
    """Put the backed-up file where ``url`` points (the caller made sure nothing is overwritten)."""
    target = sqlite_path(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    tmp = target.with_name(target.name + ".restoring")
    shutil.copyfile(copy, tmp)
    os.replace(tmp, target)
    return target


# -- PostgreSQL ------------------------------------------------------------
def pg_tool(name: str) -> str:
    """``pg_dump``/``pg_restore``: the newest Debian cluster's binaries first, then PATH."""

    def version_key(d: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", Path(d).parent.name)) or (0,)

    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True):
        if os.access(Path(d) / name, os.X_OK):
            return str(Path(d) / name)
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not installed (Debian: postgresql-client)")
    return found


def _libpq(url: URL) -> tuple[list[str], dict[str, str]]:
    """Connection arguments and the environment (password) of a libpq tool."""
    args = ["-h", url.host or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres"]
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    env.pop("PGPASSWORD", None)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return args, env


def _run(cmd: list[str], env: dict[str, str], what: str) -> str:
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=PG_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackupError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        raise BackupError(f"{what} failed (exit {done.returncode}): {done.stderr.strip()[-1000:]}")
    return done.stdout


@contextmanager
def _pg(url: URL) -> Iterator[object]:
    import psycopg

    conn = psycopg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password,
        dbname=url.database or "postgres",
        connect_timeout=10,
    )
    try:
        yield conn
    finally:
        conn.close()


def pg_counts(conn: object) -> tuple[dict[str, int], str | None]:
    cur = conn.cursor()  # type: ignore[attr-defined]
    cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename")
    tables = [r[0] for r in cur.fetchall()]
    counts = {}
    for t in tables:
        cur.execute(f'SELECT count(*) FROM "{t}"')
        counts[t] = int(cur.fetchone()[0])
    revision = None
    if "alembic_version" in counts:
        cur.execute("SELECT version_num FROM alembic_version")
        row = cur.fetchone()
        revision = row[0] if row else None
    return counts, revision


def backup_postgres(url_text: str, dest: Path) -> DatabaseCopy:
    """``pg_dump -Fc`` in a snapshot this transaction exported and counted."""
    url = make_url(url_text)
    args, env = _libpq(url)
    with _pg(url) as conn:
        import psycopg

        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # type: ignore[attr-defined]
        conn.read_only = True  # type: ignore[attr-defined]
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[attr-defined]
        counts, revision = pg_counts(conn)
        cmd = [pg_tool("pg_dump"), "-Fc", "--no-owner", f"--snapshot={snapshot}", "-f", str(dest), *args]
        _run([*cmd, "-d", url.database or "postgres"], env, "pg_dump")
        conn.commit()  # type: ignore[attr-defined]
    return DatabaseCopy(dest, counts, revision)


def list_postgres_dump(dump: Path, archive: Path) -> int:
    """``pg_restore --list``: the dump's table of contents reads (entries counted)."""
    try:
        out = _run([pg_tool("pg_restore"), "--list", str(dump)], dict(os.environ), "pg_restore --list")
    except BackupError as exc:
        raise BackupInvalid(archive, "pg_restore --list", str(exc)) from exc
    return sum(1 for line in out.splitlines() if line and not line.startswith(";"))


def postgres_is_empty(url_text: str) -> bool:
    with _pg(make_url(url_text)) as conn:
        counts, _ = pg_counts(conn)
    return not counts


def restore_postgres(dump: Path, url_text: str, *, clean: bool) -> tuple[dict[str, int], str | None]:
    """``pg_restore`` into the database of ``url_text`` (``clean``: drop what is there first); its counts after."""
    url = make_url(url_text)
    args, env = _libpq(url)
    cmd = [pg_tool("pg_restore"), "--no-owner", "--exit-on-error", "--single-transaction", *args]
    if clean:
        cmd += ["--clean", "--if-exists"]
    _run([*cmd, "-d", url.database or "postgres", str(dump)], env, "pg_restore")
    with _pg(url) as conn:
        return pg_counts(conn)
