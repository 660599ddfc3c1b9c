"""BM25 stays correct on every replica when another replica changes the knowledge base (one PostgreSQL).

Each replica keeps its own in-memory BM25 view, refreshed from the database's signature of the served
chunks at most every ``Catalog.refresh_s``. Replica A ingests, replaces, deletes, releases; replica B must
find the new text and lose the old one once its refresh interval has passed, and its answer cache (keyed by
``Catalog.version``) must not answer from an entry made before. Two changes made together that leave the
count and the newest id of the served chunks as they were (a reindex's switch while a newer document exists;
a release and a deletion of the same size) must still be seen.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.storage.models import Chunk
from tests.conftest import local_client, make_settings, metric_value
from tests.realservers import create_database
from tests.test_quarantine import damaged_bytes

pytestmark = pytest.mark.postgres
ONE_SECTION = (
    "# 星河会员说明\n\n星河会员的年费是 388 元，可以在每年 3 月 1 日前免费取消自动续费。退款将在 7 个工作日内到账。\n"
)
_kbs = itertools.count()


@pytest.fixture(scope="module")
def replicas(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, Runtime]]:
    """Two replicas of one service: one database, each its own data dir (BM25 view, answer cache, index)."""
    url = create_database(pg_server, f"rv_bm25_{os.getpid()}")
    root = tmp_path_factory.mktemp("bm25-replicas")
    a = Runtime(make_settings(root / "a", database_url=url, background_embedding=False))
    b = Runtime(make_settings(root / "b", database_url=url, background_embedding=False))
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def kb() -> str:
    return f"kb{next(_kbs)}"


def found(rt: Runtime, kb: str, query: str) -> list[str]:
    """The texts of ``rt``'s BM25 hits for ``query``."""
    return [h.text for h in rt.retriever.search(kb, query, mode="bm25").hits]


def past_refresh(rt: Runtime) -> None:
    time.sleep(rt.catalog.refresh_s + 0.2)


def md(title: str, body: str) -> bytes:
    return f"# {title}\n\n{body}\n".encode()


def test_a_document_ingested_replaced_and_deleted_on_one_replica_is_seen_so_on_the_other(
    replicas: tuple[Runtime, Runtime], kb: str
) -> None:
    a, b = replicas
    a.ingestor.ingest_bytes(kb, "base.md", md("Base", "Walruses rest on the northern ice shelf."))
    assert any("Walruses" in t for t in found(b, kb, "walruses ice"))
    a.ingestor.ingest_bytes(kb, "zebra.md", md("Zebras", "Zebras graze on the southern savanna at dawn."))
    past_refresh(b)
    assert any("Zebras graze" in t for t in found(b, kb, "zebras savanna"))

    result = a.ingestor.ingest_bytes(kb, "zebra.md", md("Zebras", "Okapis browse in the rainforest at dusk."))
    past_refresh(b)
    assert any("Okapis browse" in t for t in found(b, kb, "okapis rainforest"))
    assert not any("Zebras graze" in t for t in found(b, kb, "zebras savanna"))

    assert result.document_id is not None
    a.ingestor.delete_document(kb, result.document_id)
    past_refresh(b)
    assert found(b, kb, "okapis rainforest") == []
    assert any("Walruses" in t for t in found(b, kb, "walruses ice"))


def test_a_reindex_switch_with_a_newer_document_present_is_seen(replicas: tuple[Runtime, Runtime], kb: str) -> None:
    """Old chunks out, staged ones in, same count, and the newest id belongs to a document ingested meanwhile."""
    a, b = replicas
    old = a.ingestor.ingest_bytes(kb, "guide.md", md("Guide", "Lanterns glow amber in the old harbour."))
    assert old.chunks == 1 and old.document_id is not None
    kb_id = a.catalog.kb_id(kb)
    text = "Lanterns glow violet in the rebuilt harbour."
    with a.db.session(write=True) as s:  # the new generation, staged (as a reindex builds it: left out of views)
        s.add(
            Chunk(
                document_id=old.document_id,
                kb_id=kb_id,
                ordinal=0,
                anchor="",
                text=text,
                tokens=" ".join(a.tokenizer.tokens(text)),
                staged_by="job-1",
            )
        )
    a.ingestor.ingest_bytes(kb, "later.md", md("Later", "Herons fish in the shallow estuary."))  # newest id
    past_refresh(b)
    assert any("amber" in t for t in found(b, kb, "lanterns harbour"))
    with a.db.session(write=True) as s:  # the switch: one transaction
        s.execute(delete(Chunk).where(Chunk.document_id == old.document_id, Chunk.staged_by.is_(None)))
        s.execute(update(Chunk).where(Chunk.staged_by == "job-1").values(staged_by=None))
    past_refresh(b)
    texts = found(b, kb, "lanterns harbour")
    assert any("violet" in t for t in texts) and not any("amber" in t for t in texts)


def test_a_release_and_a_deletion_of_the_same_size_are_seen(replicas: tuple[Runtime, Runtime], kb: str) -> None:
    a, b = replicas
    held = a.ingestor.ingest_bytes(kb, "held.md", damaged_bytes(ONE_SECTION))
    assert held.quarantined and held.document_id is not None
    gone = a.ingestor.ingest_bytes(kb, "gone.md", md("Gone", "Glaciers carve deep valleys."))
    newest = a.ingestor.ingest_bytes(kb, "newest.md", md("Newest", "Comets trail bright tails."))
    assert gone.document_id is not None and newest.chunks >= 1
    assert held.chunks == gone.chunks == 1  # the same size: the served count is unchanged by the two together
    past_refresh(b)
    assert found(b, kb, "星河会员 年费") == [] and found(b, kb, "glaciers valleys")
    # together: one quarantined document released, one served of the same size deleted, another quarantined
    a.ingestor.release(kb, held.document_id, by="operator")
    a.ingestor.delete_document(kb, gone.document_id)
    assert a.ingestor.ingest_bytes(kb, "held2.md", damaged_bytes(ONE_SECTION, every=19)).quarantined
    past_refresh(b)
    assert found(b, kb, "glaciers valleys") == []
    assert found(b, kb, "星河会员 年费")


def ask(client: TestClient, kb: str, message: str) -> dict:
    r = client.post("/api/v1/chat", json={"message": message, "kb": kb})
    assert r.status_code == 200, r.text
    return r.json()


def test_the_other_replicas_answer_cache_never_answers_from_before_a_change(
    replicas: tuple[Runtime, Runtime], kb: str
) -> None:
    a, b = replicas
    question = "When does the aquarium open on Sundays?"
    a.ingestor.ingest_bytes(kb, "hours.md", md("Aquarium hours", "On Sundays the aquarium opens at nine o'clock."))
    with local_client(create_app(runtime=b)) as client:
        first = ask(client, kb, question)
        assert "nine" in first["answer"]
        hits = metric_value(client, "ragvigil_answer_cache_requests_total", outcome="hit")
        assert "nine" in ask(client, kb, question)["answer"]  # kept: the cache is in use on B
        assert metric_value(client, "ragvigil_answer_cache_requests_total", outcome="hit") == hits + 1
        version = b.catalog.version(kb)

        a.ingestor.ingest_bytes(
            kb, "hours.md", md("Aquarium hours", "On Sundays the aquarium opens at eleven o'clock.")
        )
        past_refresh(b)
        fresh = ask(client, kb, question)
        assert "eleven" in fresh["answer"] and "nine" not in fresh["answer"]
        assert b.catalog.version(kb) > version
        assert metric_value(client, "ragvigil_answer_cache_requests_total", outcome="hit") == hits + 1


def test_the_signature_names_the_served_chunk_ids(replicas: tuple[Runtime, Runtime], kb: str, tmp_path: Path) -> None:
    """Count, newest id and sum of the served ids, and the quarantined documents (what the view is built from)."""
    a, _ = replicas
    r1 = a.ingestor.ingest_bytes(kb, "one.md", md("One", "Pelicans glide."))
    r2 = a.ingestor.ingest_bytes(kb, "two.md", md("Two", "Puffins dive."))
    assert r1.chunks == r2.chunks == 1
    with a.db.session() as s:
        ids = sorted(s.scalars(select(Chunk.id).where(Chunk.kb_id == a.catalog.kb_id(kb))))
    assert a.catalog._signature(a.catalog.kb_id(kb)) == (2, ids[-1], sum(ids), 0)
