from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from ragvigil.app import Runtime
from ragvigil.chat.pipeline import Turn
from ragvigil.cli import app as cli_app
from ragvigil.knowledge.vectorstore import FaissVectorStore
from ragvigil.providers.extractive import NO_ANSWER
from ragvigil.storage.models import Chunk

QUESTIONS = json.loads((Path(__file__).parent / "data" / "kb_questions.json").read_text(encoding="utf-8"))


def _chunk_ids(rt: Runtime, doc_id: str) -> set[int]:
    with rt.db.session() as s:
        return set(s.scalars(select(Chunk.id).where(Chunk.document_id == doc_id)))


def test_reingesting_unchanged_file_does_nothing(empty_runtime: Runtime) -> None:
    rt = empty_runtime
    first = rt.ingestor.ingest_bytes("kb1", "a.md", b"# A\nAlpha beta gamma.")
    ids = _chunk_ids(rt, first.document_id)
    again = rt.ingestor.ingest_bytes("kb1", "a.md", b"# A\nAlpha beta gamma.")
    assert (first.outcome, again.outcome) == ("created", "unchanged")
    assert again.document_id == first.document_id
    assert _chunk_ids(rt, first.document_id) == ids


def test_changed_file_replaces_its_chunks_and_vectors(empty_runtime: Runtime) -> None:
    rt = empty_runtime
    first = rt.ingestor.ingest_bytes("kb1", "a.md", b"# Plans\nThe Pro plan costs 10 dollars.")
    rt.filler.drain()
    old_ids = _chunk_ids(rt, first.document_id)
    assert old_ids <= rt.vectors.ids("kb1")

    second = rt.ingestor.ingest_bytes("kb1", "a.md", b"# Plans\nThe Pro plan costs 12 dollars.")
    assert second.outcome == "updated" and second.document_id == first.document_id
    new_ids = _chunk_ids(rt, first.document_id)
    assert new_ids.isdisjoint(old_ids)
    assert rt.vectors.ids("kb1").isdisjoint(old_ids)  # stale vectors are gone at once
    hits = rt.retriever.search("kb1", "how much is the pro plan", mode="bm25").hits
    assert [h.text for h in hits] == ["The Pro plan costs 12 dollars."]
    rt.filler.drain()
    assert rt.vectors.ids("kb1") == new_ids
    doc = rt.ingestor.document("kb1", first.document_id)
    assert (doc.status, doc.vector_status) == ("ready", "ready")


def test_new_document_is_searchable_by_bm25_before_vectors(empty_runtime: Runtime) -> None:
    rt = empty_runtime
    res = rt.ingestor.ingest_bytes("kb1", "fresh.md", "# 退款\n年付订单 14 天内可以全额退款。".encode())
    doc = rt.ingestor.document("kb1", res.document_id)
    assert (doc.status, doc.vector_status) == ("searchable", "pending")
    hits = rt.retriever.search("kb1", "年付订单可以退款吗").hits
    assert hits and hits[0].document_id == res.document_id and hits[0].vector_score is None


def test_bad_file_is_recorded_with_reason_and_previous_version_kept(empty_runtime: Runtime) -> None:
    rt = empty_runtime
    bad = rt.ingestor.ingest_bytes("kb1", "empty.md", b"")
    assert bad.outcome == "failed" and bad.error == "empty file"
    doc = rt.ingestor.document("kb1", bad.document_id)
    assert (doc.status, doc.error) == ("failed", "empty file")

    good = rt.ingestor.ingest_bytes("kb1", "b.md", b"# B\nBeta content here.")
    broken = rt.ingestor.ingest_bytes("kb1", "b.md", b"  ")
    assert broken.outcome == "failed"
    doc = rt.ingestor.document("kb1", good.document_id)
    assert doc.status == "searchable" and "rejected" in (doc.error or "")
    assert rt.retriever.search("kb1", "beta content", mode="bm25").hits


def test_delete_removes_document_chunks_and_vectors(empty_runtime: Runtime) -> None:
    rt = empty_runtime
    res = rt.ingestor.ingest_bytes("kb1", "a.md", b"# A\nAlpha beta gamma.")
    rt.filler.drain()
    ids = _chunk_ids(rt, res.document_id)
    rt.ingestor.delete_document("kb1", res.document_id)
    assert not _chunk_ids(rt, res.document_id)
    assert rt.vectors.ids("kb1").isdisjoint(ids)
    assert not rt.retriever.search("kb1", "alpha beta").hits


def test_cli_batch_continues_past_bad_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "docs"
    src.mkdir()
    (src / "good.md").write_text("# Good\nShipping takes three days.", encoding="utf-8")
    (src / "empty.txt").write_text("", encoding="utf-8")
    (src / "picture.png").write_bytes(b"\x89PNG")
    (src / "later.md").write_text("# Later\nReturns are free.", encoding="utf-8")
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    result = runner.invoke(cli_app, ["ingest", str(src), "--defer-vectors"])
    assert result.exit_code == 1
    assert "2 created" in result.output and "2 failed" in result.output
    assert "empty file" in result.output and "unsupported file type" in result.output
    ok = runner.invoke(cli_app, ["ingest", str(src / "good.md"), str(src / "later.md"), "--defer-vectors"])
    assert ok.exit_code == 0 and "2 unchanged" in ok.output
    found = runner.invoke(cli_app, ["search", "how long does shipping take", "--mode", "bm25", "--json"])
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    assert hits[0]["source"].endswith("good.md") and hits[0]["text"] == "Shipping takes three days."


@pytest.mark.parametrize("q", [q for q in QUESTIONS["answerable"] if q["lang"] in ("zh", "en")], ids=lambda q: q["doc"])
def test_sample_kb_question_finds_its_document_in_top3(sample_runtime: Runtime, q: dict) -> None:
    hits = sample_runtime.retriever.search("default", q["question"], k=3).hits
    assert q["doc"] in [os.path.basename(h.source) for h in hits]
    assert hits[0].relevant


@pytest.mark.parametrize("q", QUESTIONS["unanswerable"], ids=lambda q: q["question"][:20])
def test_unrelated_question_gets_the_honest_no_answer(sample_runtime: Runtime, q: dict) -> None:
    turn = sample_runtime.pipeline.run(Turn(message=q["question"], kb="default"))
    lang = "zh" if q["lang"] == "zh" else "en"
    assert turn.answer == NO_ANSWER[lang]
    assert turn.sources == []


def test_answer_is_grounded_with_citations(sample_runtime: Runtime) -> None:
    turn = sample_runtime.pipeline.run(Turn(message="专业版年付多少钱？", kb="default"))
    assert "¥268" in turn.answer and "[1]" in turn.answer
    assert turn.sources[0]["cited"] and turn.sources[0]["source"].endswith("zh-plans-pricing.md")
    en = sample_runtime.pipeline.run(Turn(message="How many API requests per minute are allowed?", kb="default"))
    assert "120" in en.answer and en.sources[0]["source"].endswith("en-api-webhooks.md")


def test_follow_up_question_uses_the_session_history(sample_runtime: Runtime) -> None:
    first = sample_runtime.pipeline.run(Turn(message="How do I export my notes?", kb="default"))
    follow = sample_runtime.pipeline.run(
        Turn(message="and is there a page limit?", kb="default", session_id=first.session_id)
    )
    assert follow.history and follow.sources
    assert follow.sources[0]["source"].endswith("en-export-notes.md")


def test_broken_vector_index_degrades_to_bm25(sample_runtime: Runtime) -> None:
    rt = sample_runtime
    rt.vectors.flush()
    path = next(rt.settings.index_dir.glob("default.*.faiss"))
    path.write_bytes(b"corrupt")
    rt.vectors = FaissVectorStore(rt.settings.index_dir, rt.embedder.dim)
    rt.retriever.store = rt.vectors
    turn = rt.pipeline.run(Turn(message="专业版年付多少钱？", kb="default"))
    assert turn.degraded and any("vector search unavailable" in r for r in turn.degraded_reasons)
    assert "¥268" in turn.answer


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_vector_store_persists_updates_and_deletes(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(50, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    store = FaissVectorStore(tmp_path, 8, kind)  # type: ignore[arg-type]
    store.upsert("kb", list(range(1, 51)), vecs)
    assert store.search("kb", vecs[9], 1)[0][0] == 10
    store.delete("kb", [10])
    assert 10 not in [i for i, _ in store.search("kb", vecs[9], 5)]
    store.upsert("kb", [7], vecs[20:21])  # re-embed chunk 7 with another vector
    assert store.search("kb", vecs[20], 2)[0][0] in (7, 21)
    store.flush()
    reopened = FaissVectorStore(tmp_path, 8, kind)  # type: ignore[arg-type]
    assert reopened.count("kb") == 49
    assert reopened.ids("kb") == set(range(1, 51)) - {10}
    assert reopened.search("kb", vecs[30], 1)[0][0] == 31


def test_resync_requeues_vectors_missing_from_the_index(sample_runtime: Runtime) -> None:
    rt = sample_runtime
    for p in rt.settings.index_dir.glob("*"):
        p.unlink()  # the index was lost (disk replaced, crash before flush...)
    rt.vectors = FaissVectorStore(rt.settings.index_dir, rt.embedder.dim)
    rt.filler.store = rt.vectors
    requeued = rt.filler.resync()
    assert requeued == rt.ingestor.pending_vectors() > 0
