"""Catalog's BM25 view: records share what they can, and a large view is checked in the background.

From ``background_check_at`` chunks the signature query (an aggregate over every served chunk) runs in a
background thread, one at a time per knowledge base, and a query is answered from the cached view
meanwhile; a smaller view is checked in the query itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from ragvigil.knowledge.catalog import Catalog, Signature
from ragvigil.storage.db import Database, migrate
from ragvigil.storage.models import Chunk, Document

_ids = iter(range(1, 10**6))


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'views.db'}")
    migrate(database.engine)
    return database


def add_document(db: Database, catalog: Catalog, kb: str, texts: list[str], title: str = "Guide") -> str:
    kb_id = catalog.kb_id(kb, create=True)
    doc_id = f"doc{next(_ids)}"
    with db.session(write=True) as s:
        s.add(Document(id=doc_id, kb_id=kb_id, source=f"{doc_id}.md", title=title, status="ready",
                       chunk_count=len(texts), size_bytes=1))  # fmt: skip
        s.flush()
        for i, text in enumerate(texts):
            s.add(Chunk(document_id=doc_id, kb_id=kb_id, ordinal=i, anchor="Intro", text=text,
                        tokens=" ".join(text.lower().split())))  # fmt: skip
    return doc_id


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_records_share_their_documents_fields_and_one_string_per_token(db: Database) -> None:
    catalog = Catalog(db)
    add_document(db, catalog, "kb", ["walrus ice shelf", "walrus ice floe", "polar ice walrus"], title="Walruses")
    add_document(db, catalog, "kb", ["ice cream"], title="Desserts")
    records = catalog.bm25("kb").records
    first, second, third = records[:3]
    assert first.title is second.title is third.title
    assert first.source is second.source and first.document_id is second.document_id
    assert first.warnings is second.warnings and first.anchor is second.anchor
    ice = {id(t) for r in records for t in r.tokens if t == "ice"}
    assert len(ice) == 1  # one string object for every occurrence of a token
    assert records[3].title == "Desserts"


def blocked_signature(catalog: Catalog) -> tuple[threading.Event, list[float]]:
    """Make ``catalog._signature`` wait for the returned event; the list records when each call started."""
    release, calls = threading.Event(), []
    real = catalog._signature

    def slow(kb_id: int) -> Signature:
        calls.append(time.monotonic())
        assert release.wait(10)
        return real(kb_id)

    catalog._signature = slow  # type: ignore[method-assign]
    return release, calls


def test_a_large_view_is_checked_in_the_background_one_check_at_a_time(db: Database) -> None:
    catalog = Catalog(db, refresh_s=0.0, background_rebuild_at=10**9, background_check_at=3)
    add_document(db, catalog, "kb", ["alpha one", "alpha two", "alpha three"])
    first = catalog.bm25("kb")
    assert len(first) == 3
    release, calls = blocked_signature(catalog)
    add_document(db, catalog, "kb", ["beta four"])
    try:
        for _ in range(20):  # each query is answered at once from the cached view while the check waits
            t = time.monotonic()
            assert catalog.bm25("kb") is first
            assert time.monotonic() - t < 0.5
        wait_for(lambda: len(calls) == 1)
        time.sleep(0.05)
        assert len(calls) == 1  # one check in flight, however many queries came
    finally:
        release.set()
    wait_for(lambda: len(catalog.bm25("kb")) == 4)
    assert [r.text for r, _ in catalog.bm25("kb").search(["beta"], 5)] == ["beta four"]
    wait_for(lambda: not catalog._checking)


def test_a_small_view_is_checked_in_the_query(db: Database) -> None:
    catalog = Catalog(db, refresh_s=0.0, background_check_at=1000)
    add_document(db, catalog, "kb", ["alpha one", "alpha two"])
    assert len(catalog.bm25("kb")) == 2
    add_document(db, catalog, "kb", ["beta three"])
    assert len(catalog.bm25("kb")) == 3  # seen by the very query after the change
    assert not catalog._checking


def test_a_failed_background_check_keeps_the_view_and_a_later_one_runs(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = Catalog(db, refresh_s=0.0, background_rebuild_at=10**9, background_check_at=2)
    add_document(db, catalog, "kb", ["alpha one", "alpha two"])
    view = catalog.bm25("kb")
    real = catalog._signature
    failures = []

    def down(kb_id: int) -> Signature:
        failures.append(kb_id)
        raise OperationalError("SELECT", {}, Exception("database is down"))

    monkeypatch.setattr(catalog, "_signature", down)
    assert catalog.bm25("kb") is view
    wait_for(lambda: failures and not catalog._checking)
    assert catalog.bm25("kb") is view  # still served
    monkeypatch.setattr(catalog, "_signature", real)
    add_document(db, catalog, "kb", ["beta three"])
    wait_for(lambda: len(catalog.bm25("kb")) == 3)
