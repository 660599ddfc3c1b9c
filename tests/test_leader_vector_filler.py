"""On a shared vector server (a real ``chroma run``) only the leader fills vectors; with faiss files every
replica runs its own filler (its index is its own). Two runtimes on one PostgreSQL: a document uploaded to
the standby is embedded by the leader's filler, the standby's filler never runs and says ``standby``; when
the leader goes away the standby's filler starts and fills what is ingested next.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ragvigil.app import Runtime
from ragvigil.storage.models import Chunk
from tests.conftest import make_settings
from tests.realservers import RestartableServer, create_database, wait_until

pytestmark = pytest.mark.postgres
LEASE_S, RENEW_S = 2.0, 0.2


def pending(rt: Runtime) -> int:
    with rt.db.session() as s:
        return int(s.scalar(select(func.count(Chunk.id)).where(Chunk.embedded.is_(False))) or 0)


def settings(root: Path, name: str, url: str, **extra: object):  # type: ignore[no-untyped-def]
    return make_settings(
        root / name,
        database_url=url,
        leader={"lease_s": LEASE_S, "renew_s": RENEW_S},
        retrieval={"sentence_vectors_per_chunk": 0},  # the passages alone: quicker to fill
        **extra,
    )


@pytest.fixture
def on_chroma(pg_server: str, chroma: RestartableServer, tmp_path: Path) -> Iterator[tuple[Runtime, Runtime]]:
    url = create_database(pg_server, f"rv_filler_{os.getpid()}_{uuid.uuid4().hex[:6]}")
    store = {"backend": "chroma", "url": chroma.url, "timeout_s": 5, "collection_prefix": f"lf{uuid.uuid4().hex[:8]}_"}
    a = Runtime(settings(tmp_path, "a", url, vector_store=store))
    b = Runtime(settings(tmp_path, "b", url, vector_store=store))
    yield a, b
    a.close()
    b.close()


def test_only_the_leader_fills_a_shared_vector_server_and_the_standby_takes_over(
    on_chroma: tuple[Runtime, Runtime],
) -> None:
    a, b = on_chroma
    for rt in (a, b):
        rt.leadership.start()
        rt.vector_filling.start()  # type: ignore[union-attr]
    assert a.leadership.is_leader() and not b.leadership.is_leader()
    assert a.leader_status()["jobs"]["vector_filler"] == "running"
    assert b.leader_status()["jobs"]["vector_filler"] == "standby"

    b.ingestor.ingest_bytes("default", "tides.md", b"# Tides\n\nSpring tides follow the full and the new moon.\n")
    a.filler.wake()
    wait_until(lambda: pending(b) == 0, 120, "the leader to embed what the standby ingested")
    assert b.filler._thread is None  # the standby's filler never ran
    hits = b.retriever.search("default", "when are spring tides", mode="vector").hits
    assert hits and "Spring tides" in hits[0].text  # the leader's vectors, found by the standby on the server

    a.leadership.stop()  # the leader goes away
    wait_until(lambda: b.leader_status()["jobs"]["vector_filler"] == "running", LEASE_S * 5, "the standby's filler")
    assert a.leader_status()["jobs"]["vector_filler"] == "standby"
    wait_until(lambda: a.filler._thread is None or not a.filler._thread.is_alive(), 15, "the old leader's filler")
    a.ingestor.ingest_bytes("default", "reefs.md", b"# Reefs\n\nCoral reefs grow in warm shallow seas.\n")
    b.filler.wake()
    wait_until(lambda: pending(a) == 0, 120, "the new leader to embed what the old one ingested")
    hits = a.retriever.search("default", "where do coral reefs grow", mode="vector").hits
    assert hits and "Coral reefs" in hits[0].text


def test_with_faiss_files_every_replica_runs_its_own_filler(pg_server: str, tmp_path: Path) -> None:
    url = create_database(pg_server, f"rv_filler_{os.getpid()}_{uuid.uuid4().hex[:6]}")
    a, b = Runtime(settings(tmp_path, "a", url)), Runtime(settings(tmp_path, "b", url))
    try:
        assert a.vector_filling is None and b.vector_filling is None  # nothing gates the filler
        for rt in (a, b):
            rt.start_background()
        assert a.leadership.is_leader() and not b.leadership.is_leader()
        for rt in (a, b):  # the standby's filler runs too: its index is its own
            assert rt.filler._thread is not None and rt.filler._thread.is_alive()
            assert rt.leader_status()["jobs"]["vector_filler"] == "per_replica"
    finally:
        a.close()
        b.close()
