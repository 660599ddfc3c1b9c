"""The leader lease as a PostgreSQL session-level advisory lock, held on a connection of its own.

Why a session lock on a dedicated connection: PostgreSQL releases it the moment that session ends
(the process dies, the connection is killed or cut), so a standby takes over at its next try without
waiting for any lease to run out, and two replicas can never both hold it. The connection is kept
out of the pool (a pooled connection would carry the lock to whoever borrows it next) and checked
at every renewal: if it is gone, or the lock is no longer its own, leadership is lost at once, and
the connection is closed so that a lock it might still hold is released too. The connection's
``application_name`` is the replica id, which is how a standby tells who leads (``pg_locks`` joined
with ``pg_stat_activity``).
"""

from __future__ import annotations

import threading
import zlib

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.pool import NullPool

# one lock per database (advisory locks are scoped to the database): a fixed key below 2**31, so the lock
# shows in pg_locks with classid 0 and objid the key
LOCK_KEY = zlib.crc32(b"ragvigil:leader") & 0x7FFFFFFF

HELD = text(
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND classid = 0 AND objid = :key AND objsubid = 1)"
)
HOLDER = text(
    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND l.classid = 0 AND l.objid = :key AND l.objsubid = 1"
)


class PostgresLock:
    """``Lease`` over ``pg_try_advisory_lock``; every call within ``timeout_s`` (connect and statement)."""

    name = "postgres"

    def __init__(self, url: str, replica: str, *, timeout_s: float, key: int = LOCK_KEY) -> None:
        self.replica = replica
        self.key = key
        ms = max(100, int(timeout_s * 1000))
        # keepalives: a peer that vanished without closing is found within about timeout_s + a few probes
        self.engine: Engine = create_engine(
            url,
            poolclass=NullPool,
            connect_args={
                "application_name": replica[:63],
                "connect_timeout": max(1, round(timeout_s)),
                "options": f"-c statement_timeout={ms} -c idle_in_transaction_session_timeout=0",
                "keepalives": 1,
                "keepalives_idle": max(1, round(timeout_s)),
                "keepalives_interval": 1,
                "keepalives_count": 3,
            },
        )
        self._conn: Connection | None = None
        self._lock = threading.Lock()  # one statement at a time on the one connection (election vs /health)

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self._conn

    def _drop(self) -> None:
        """Close the session: the server releases any lock it held."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()
                conn.close()
            except Exception:
                pass  # closing a broken connection: nothing left to release

    def _run(self, statement, **params: object) -> object:  # type: ignore[no-untyped-def]
        with self._lock:
            try:
                return self._connection().execute(statement, params).scalar()
            except Exception:
                self._drop()
                raise

    def acquire(self) -> bool:
        return bool(self._run(text("SELECT pg_try_advisory_lock(:key)"), key=self.key))

    def renew(self) -> bool:
        """The session is alive and still holds the lock (a lock cannot expire, only its session can end)."""
        if self._conn is None:
            return False
        held = bool(self._run(HELD, key=self.key))
        if not held:
            with self._lock:
                self._drop()
        return held

    def release(self) -> None:
        with self._lock:
            try:
                if self._conn is not None:
                    self._conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            finally:
                self._drop()

    def holder(self) -> str | None:
        name = self._run(HOLDER, key=self.key)
        return str(name) if name else None

    def close(self) -> None:
        with self._lock:
            self._drop()
        self.engine.dispose()
