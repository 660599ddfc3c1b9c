"""Background sentence vectors: written with a document's passage vectors, kept across a restart, read into a
turn's generation request (also through the OpenAI-compatible route), gone with their chunk, refilled by
resync, and never a reason for a turn to fail."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import delete, select, text

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.chat.pipeline import Generate, Turn
from ragvigil.knowledge.sentence_vectors import MIN_SENTENCE_CHARS, chunk_sentences
from ragvigil.ops import metrics
from ragvigil.storage.models import Chunk
from ragvigil.storage.sentence_vectors import SentenceVector
from ragvigil.types import Generation, GenerationRequest, sentence_key
from tests.conftest import local_client, make_settings

_counter = itertools.count()

REFUND = (
    "# 退款\n年付订单 14 天内可以全额退款。月付订单不支持退款。退款会在 3 个工作日内原路退回。\n\n"
    "# Plans\nThe Pro plan costs 10 dollars a month. Students get half off with a school email."
)


class RecordingGenerator:
    """Answers with a fixed cited sentence and keeps every request it was given."""

    name = "recording"

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    def check(self) -> None:
        return None

    def generate(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        return Generation("recorded [1]", self.name, cited=[1])

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        yield self.generate(request).text


def _record(rt: Runtime) -> RecordingGenerator:
    """Put a recording generator in the pipeline's generate stage (the stage itself is the real one)."""
    stage = next(s for s in rt.pipeline.stages if isinstance(s, Generate))
    stage.generator = stage.fallback = recorder = RecordingGenerator()
    return recorder


def _chunks(rt: Runtime, document_id: str) -> dict[int, str]:
    with rt.db.session() as s:
        return {r[0]: r[1] for r in s.execute(select(Chunk.id, Chunk.text).where(Chunk.document_id == document_id))}


def _stored_chunk_ids(rt: Runtime) -> set[int]:
    with rt.db.session() as s:
        return set(s.scalars(select(SentenceVector.chunk_id)))


def _reads(outcome: str) -> float:
    return metrics.REGISTRY.get_sample_value("ragvigil_sentence_vector_reads_total", {"outcome": outcome}) or 0.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rv.db'}"
    from tests.realservers import create_database

    server = request.getfixturevalue("pg_server")
    return create_database(server, f"rv_sv_{os.getpid()}_{next(_counter)}")


def test_a_chunks_sentences_are_bounded_long_enough_and_unique() -> None:
    body = "好的。" + "".join(f"第{i}条规则写在这里。" for i in range(30)) + "第0条规则写在这里。"
    chosen = chunk_sentences(body, 8)
    assert len(chosen) == 8
    assert "好的。" not in chosen and all(len(c) >= MIN_SENTENCE_CHARS for c in chosen)
    assert len({sentence_key(c) for c in chosen}) == 8
    assert chunk_sentences("OK。", 8) == ["OK。"]  # a chunk of only short pieces still gets one row
    assert chunk_sentences(body, 0) == []


def test_a_new_documents_sentence_vectors_are_written_kept_and_reach_the_generator(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    rt = Runtime(settings)
    try:
        doc = rt.ingestor.ingest_bytes("kb1", "refund.md", REFUND.encode())
        rt.filler.drain()
        chunks = _chunks(rt, doc.document_id)
        expected = {sentence_key(s) for t in chunks.values() for s in chunk_sentences(t, 12)}
        stored = rt.sentence_vectors.read(list(chunks))
        assert set(stored) == expected and len(expected) >= 5
        sentence = "年付订单 14 天内可以全额退款。"
        vec = stored[sentence_key(sentence)]
        assert vec.dtype == np.float32 and np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-4)
        direct = rt.filler.embedder.embed_passages([sentence])[0]  # the e5 "passage:" side
        assert float(vec @ direct / np.linalg.norm(direct)) > 0.999
    finally:
        rt.close()

    rt = Runtime(settings)  # a restart reads the same rows: nothing is embedded again
    try:
        assert set(rt.sentence_vectors.read(list(chunks))) == expected
        recorder = _record(rt)
        turn = rt.pipeline.run(Turn(message="年付订单可以退款吗", kb="kb1", language="zh"))
        assert turn.answer == "recorded [1]"
        req = recorder.requests[-1]
        assert req.passages, "the refund section is relevant"
        assert req.query_vector is not None and req.query_vector is turn.retrieval.query_vector
        assert req.query_vector.shape == (rt.embedder.dim,)
        passage_keys = {sentence_key(s) for p in req.passages for s in chunk_sentences(p.text, 12)}
        assert set(req.sentence_vectors) == passage_keys
        assert sentence_key(sentence) in req.sentence_vectors
    finally:
        rt.close()


def test_the_openai_route_hands_the_vectors_to_the_generator(empty_runtime: Runtime) -> None:
    rt = empty_runtime
    rt.ingestor.ingest_bytes(rt.settings.default_kb, "refund.md", REFUND.encode())
    rt.filler.drain()
    recorder = _record(rt)
    with local_client(create_app(runtime=rt)) as c:
        r = c.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "How much is the Pro plan?"}]}
        )
    assert r.status_code == 200, r.text
    req = recorder.requests[-1]
    assert req.query_vector is not None
    assert sentence_key("The Pro plan costs 10 dollars a month.") in req.sentence_vectors


def test_deleting_or_reingesting_a_document_removes_its_sentence_vectors(db_url: str, tmp_path: Path) -> None:
    rt = Runtime(make_settings(tmp_path / "data", database_url=db_url))
    try:
        keep = rt.ingestor.ingest_bytes("kb1", "keep.md", b"# Keep\nThis document stays in the knowledge base.")
        doc = rt.ingestor.ingest_bytes("kb1", "refund.md", REFUND.encode())
        rt.filler.drain()
        old = set(_chunks(rt, doc.document_id))
        kept = set(_chunks(rt, keep.document_id))
        assert _stored_chunk_ids(rt) == old | kept

        changed = REFUND.replace("14 天", "30 天")
        assert rt.ingestor.ingest_bytes("kb1", "refund.md", changed.encode()).outcome == "updated"
        assert _stored_chunk_ids(rt) == kept  # the old chunks' rows went with them, at once
        rt.filler.drain()
        new = set(_chunks(rt, doc.document_id))
        assert _stored_chunk_ids(rt) == new | kept
        assert sentence_key("年付订单 30 天内可以全额退款。") in rt.sentence_vectors.read(list(new))

        rt.ingestor.delete_document("kb1", doc.document_id)
        assert _stored_chunk_ids(rt) == kept
    finally:
        rt.close()


def test_resync_fills_a_chunk_whose_sentence_vectors_are_missing(empty_runtime: Runtime) -> None:
    rt = empty_runtime
    doc = rt.ingestor.ingest_bytes("kb1", "refund.md", REFUND.encode())
    rt.filler.drain()
    chunks = _chunks(rt, doc.document_id)
    before = rt.sentence_vectors.read(list(chunks))
    lost = min(chunks)
    with rt.db.session(write=True) as s:  # e.g. written by a release before sentence vectors
        s.execute(delete(SentenceVector).where(SentenceVector.chunk_id == lost))
    assert lost not in _stored_chunk_ids(rt)
    assert rt.filler.drain() == 0  # nothing looks for them until a resync

    assert rt.filler.resync() == 1
    with rt.db.session() as s:  # its passage vector is kept: only the sentences are filled
        assert s.scalar(select(Chunk.embedded).where(Chunk.id == lost)) is True
    assert rt.filler.drain() == 1
    after = rt.sentence_vectors.read(list(chunks))
    assert set(after) == set(before)
    assert all(np.allclose(after[k], before[k], atol=1e-5) for k in before)
    assert rt.filler.resync() == 0 and rt.filler.drain() == 0


def test_requeue_after_an_outage_covers_sentence_vectors(empty_runtime: Runtime) -> None:
    rt = empty_runtime
    doc = rt.ingestor.ingest_bytes("kb1", "refund.md", REFUND.encode())
    rt.filler.drain()
    with rt.db.session(write=True) as s:
        s.execute(delete(SentenceVector))
    assert rt.filler.requeue() == len(_chunks(rt, doc.document_id))
    rt.filler.drain()
    assert _stored_chunk_ids(rt) == set(_chunks(rt, doc.document_id))


def test_without_sentence_vectors_configured_none_are_written(tmp_path: Path) -> None:
    rt = Runtime(make_settings(tmp_path / "data", retrieval={"sentence_vectors_per_chunk": 0}))
    try:
        doc = rt.ingestor.ingest_bytes("kb1", "refund.md", REFUND.encode())
        assert rt.filler.drain() == len(_chunks(rt, doc.document_id))
        assert _stored_chunk_ids(rt) == set()
        assert rt.filler.resync() == 0
    finally:
        rt.close()


def test_a_failing_sentence_vector_store_leaves_the_turn_answered(empty_runtime: Runtime) -> None:
    rt = empty_runtime
    rt.ingestor.ingest_bytes("kb1", "refund.md", REFUND.encode())
    rt.filler.drain()
    recorder = _record(rt)
    with rt.db.session(write=True) as s:  # the store fails for real: its table is gone, the rest works
        s.execute(text("DROP TABLE sentence_vectors"))
    errors = _reads("error")
    turn = rt.pipeline.run(Turn(message="年付订单可以退款吗", kb="kb1", language="zh"))
    assert turn.answer == "recorded [1]" and turn.persisted_to == "database"
    req = recorder.requests[-1]
    assert req.passages and req.query_vector is not None
    assert req.sentence_vectors == {}
    assert _reads("error") == errors + 1


def test_migration_0007_adds_the_table_and_downgrades(tmp_path: Path) -> None:
    from alembic import command
    from sqlalchemy import inspect

    from ragvigil.storage.db import Database, alembic_config

    db = Database(f"sqlite:///{tmp_path / 'mig.db'}")
    cfg = alembic_config(str(db.engine.url))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0005")
    assert "sentence_vectors" not in inspect(db.engine).get_table_names()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0007")
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0007"
    fks = inspect(db.engine).get_foreign_keys("sentence_vectors")
    assert [(f["referred_table"], f["options"].get("ondelete")) for f in fks] == [("chunks", "CASCADE")]
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0005")
    assert "sentence_vectors" not in inspect(db.engine).get_table_names()
    db.dispose()
