"""A turn's passages' sentence vectors: read from the database once per chunk, not on every turn."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError

from ragvigil.app import Runtime
from ragvigil.chat.pipeline import Generate
from ragvigil.knowledge.sentence_vectors import SentenceVectorCache, chunk_sentences
from ragvigil.storage.models import Chunk
from ragvigil.types import sentence_key
from tests.test_sentence_vectors import REFUND


def _passages(rt: Runtime, document_id: str) -> list[tuple[int, str]]:
    with rt.db.session() as s:
        return [(r[0], r[1]) for r in s.execute(select(Chunk.id, Chunk.text).where(Chunk.document_id == document_id))]


def test_a_chunks_vectors_are_read_once_and_a_chunk_without_them_is_read_again(empty_runtime: Runtime) -> None:
    rt = empty_runtime
    doc = rt.ingestor.ingest_bytes("kb1", "refund.md", REFUND.encode())
    passages = _passages(rt, doc.document_id)
    cache = SentenceVectorCache(rt.sentence_vectors, max_chunks=2)
    assert cache.read(passages[:1]) == {} and len(cache) == 0  # not filled yet: nothing kept
    rt.filler.drain()
    first = cache.read(passages[:1])  # read again now that the filler wrote them
    expected = {sentence_key(s) for s in chunk_sentences(passages[0][1], 12)}
    assert set(first) == expected and len(cache) == 1
    with rt.db.session(write=True) as s:  # the table is gone: only what is kept can still be read
        s.execute(text("DROP TABLE sentence_vectors"))
    assert set(cache.read(passages[:1])) == expected
    with pytest.raises(SQLAlchemyError):  # a chunk not kept is read from the store, which fails now
        cache.read([(10_000, "another chunk")])


def test_the_cache_is_bounded_least_recent_dropped(empty_runtime: Runtime) -> None:
    rt = empty_runtime
    doc = rt.ingestor.ingest_bytes("kb1", "refund.md", REFUND.encode())
    rt.filler.drain()
    passages = _passages(rt, doc.document_id)
    assert len(passages) >= 2
    cache = SentenceVectorCache(rt.sentence_vectors, max_chunks=1)
    cache.read(passages[:1])
    cache.read(passages[1:2])
    assert len(cache) == 1
    with rt.db.session(write=True) as s:
        s.execute(text("DROP TABLE sentence_vectors"))
    assert cache.read(passages[1:2])  # the most recent is kept
    with pytest.raises(SQLAlchemyError):  # the first was dropped: read from the failing store
        cache.read(passages[:1])


def test_the_generate_stage_reads_through_the_cache(empty_runtime: Runtime) -> None:
    generate = next(s for s in empty_runtime.pipeline.stages if isinstance(s, Generate))
    assert isinstance(generate.sentence_cache, SentenceVectorCache)
