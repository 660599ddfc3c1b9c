"""Replicas that start together against one fresh PostgreSQL database migrate it once, and all start.

With `database.migrate_on_start`, every replica of a rollout runs the migrations at start; without a lock
two of them run the same DDL at once and one dies on "relation already exists" (or a duplicate
`alembic_version` row). A real PostgreSQL server, real threads, each with its own engine as a replica has.
"""

from __future__ import annotations

import threading
import time
import uuid

from sqlalchemy import create_engine, text

from ragvigil.storage.db import migrate
from ragvigil.storage.schema import head_revision
from tests.realservers import create_database

REPLICAS = 4


def test_replicas_starting_together_migrate_a_fresh_database_once(pg_server: str) -> None:
    url = create_database(pg_server, "together_" + uuid.uuid4().hex[:10])
    engines = [create_engine(url) for _ in range(REPLICAS)]
    start, errors = threading.Barrier(REPLICAS), []

    def replica(i: int) -> None:
        start.wait(timeout=30)
        try:
            migrate(engines[i])
        except Exception as exc:  # the test reports whatever a replica died of
            errors.append(f"replica {i}: {type(exc).__name__}: {str(exc)[:300]}")

    threads = [threading.Thread(target=replica, args=(i,), daemon=True) for i in range(REPLICAS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60  # a deadlock between replicas must end the test, not hang it
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    try:
        assert not [t for t in threads if t.is_alive()], "replicas still migrating after 60 s (deadlocked)"
        assert not errors, "\n".join(errors)
        with engines[0].connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head_revision()]
    finally:
        for e in engines:
            e.dispose()
