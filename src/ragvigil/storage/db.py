"""Engine creation, SQLite tuning and migrations applied at start."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# the key of the PostgreSQL advisory lock every `migrate` of every replica takes ("ragvigil" as an int64)
MIGRATION_LOCK_KEY = int.from_bytes(b"ragvigil", "big") & 0x7FFF_FFFF_FFFF_FFFF


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and a busy timeout."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent).

    On PostgreSQL the whole upgrade runs under a transaction-scoped advisory lock: replicas of a rollout
    that all migrate at start (``database.migrate_on_start``) then take turns, the first applies what is
    missing and the others find the schema at head, instead of running the same DDL at once (which
    deadlocks or dies on "already exists"). The lock ends with the transaction, also when the process dies.
    SQLite serves one host; its own write lock orders the rare concurrent start.
    """
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


class Database:
    """The engine plus a session factory; one per process."""

    def __init__(self, url: str) -> None:
        self.is_sqlite = url.startswith("sqlite")
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite allows one writer; threads that collide fall into its busy handler, which
        # sleeps in growing steps (tens of ms). Queueing writers here keeps the tail short.
        self._write_lock = threading.RLock() if self.is_sqlite else nullcontext()

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """A unit of work: commits on success, rolls back on error. Pass ``write=True`` to write."""
        with self._write_lock if write else nullcontext():
            s = self._sessions()
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise
            finally:
                s.close()

    def dispose(self) -> None:
        self.engine.dispose()
