"""One reindex per knowledge base across replicas: two replicas asking at the same moment on one
PostgreSQL database get one job, the other a 409 ``reindex_running``.

Each "replica" is a `Reindexer` with its own engine and its own in-process lock, as two processes
would have; they share only the database (and, so that each can tell the other's job is alive without
a second process, the table of running job threads).
"""

from __future__ import annotations

import threading
import time
import uuid
from types import SimpleNamespace
from typing import Any

from sqlalchemy import select

from ragvigil.knowledge.catalog import Catalog
from ragvigil.knowledge.reindex import Reindexer, ReindexRunning
from ragvigil.storage.db import Database, migrate
from ragvigil.storage.models import ReindexJob
from tests.realservers import create_database

ROUNDS = 30


def _replica(url: str) -> Reindexer:
    db = Database(url)
    ingestor = SimpleNamespace(catalog=Catalog(db), db=db)
    return Reindexer(ingestor, None, None, None, None, work_dir=None)  # type: ignore[arg-type]  # begin() only


def _race(a: Reindexer, b: Reindexer) -> list[tuple[str, str]]:
    """Both replicas ask for a reindex of ``default`` at the same moment; what each was told."""
    start, done, outcomes = threading.Barrier(2), threading.Event(), []

    def ask(r: Reindexer, who: str) -> None:
        start.wait(timeout=30)
        try:
            outcomes.append(("started", r.begin("default", who)))
        except ReindexRunning as exc:
            outcomes.append(("refused", str(exc)))
        except Exception as exc:  # the test reports whatever else a replica died of
            outcomes.append(("error", f"{type(exc).__name__}: {exc}"))
        done.wait(timeout=30)  # keep the job's thread alive until both have asked

    threads = [threading.Thread(target=ask, args=(r, w), daemon=True) for r, w in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(outcomes) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    done.set()
    for t in threads:
        t.join(timeout=10)
    return outcomes


def test_two_replicas_asking_at_once_start_one_reindex(pg_server: str) -> None:
    url = create_database(pg_server, "reindex_" + uuid.uuid4().hex[:10])
    first = Database(url)
    migrate(first.engine)
    Catalog(first).kb_id("default", create=True)
    a, b = _replica(url), _replica(url)
    b._threads = a._threads  # each sees the other's job thread alive, as it would see another live process
    try:
        for round_ in range(ROUNDS):  # a race: without the lock some rounds start two jobs, most start one
            outcomes = _race(a, b)
            assert sorted(k for k, _ in outcomes) == ["refused", "started"], (round_, outcomes)
            with first.session(write=True) as s:
                running: list[Any] = list(s.scalars(select(ReindexJob).where(ReindexJob.state == "running")))
                assert len(running) == 1, (round_, [j.id for j in running])
                running[0].state = "done"  # the next round starts from no running job
    finally:
        for db in (first, a.db, b.db):
            db.dispose()
