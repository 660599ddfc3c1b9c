"""Fills in vectors for chunks that have none, in the background, and resyncs the index.

Embedding is the slow step (about 1 passage/s for 500 Chinese characters on 2 cores), so it
never blocks ingestion. On start, ``resync`` compares the on-disk index with the database
and queues whatever the index lacks (after a crash, or a CLI ingest with deferred vectors).
``requeue`` does the same when the vector store is back from an outage: chunks ingested
meanwhile, or whose vectors the store failed to take, are filled in (the retrieval mode
calls it when it switches back to hybrid; a remediation action may too).

With the passage vectors it embeds each chunk's sentences (``knowledge.sentence_vectors``: at most
``max_sentences`` per chunk, written in the same commit as the chunk's ``embedded`` flag). A chunk that
has its vector but no sentence vectors (a database from before them, a crash between releases) is
filled by a second, sentences-only pass after ``resync``/``requeue``, so its passage is not re-embedded.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
from sqlalchemy import select, update

from ragvigil.knowledge.embeddings import Embedder
from ragvigil.knowledge.ingest import indexable_text
from ragvigil.knowledge.sentence_vectors import SentenceVectorStore, chunk_sentences, normalised
from ragvigil.knowledge.vectorstore import VectorStore
from ragvigil.storage.db import Database
from ragvigil.storage.models import Chunk, Document, DocumentStatus, KnowledgeBase

log = logging.getLogger(__name__)


class VectorFiller:
    def __init__(
        self,
        db: Database,
        embedder: Embedder,
        store: VectorStore,
        batch: int = 16,
        flush_every_s: float = 5.0,
        max_sentences: int = 12,
        sentences: SentenceVectorStore | None = None,
    ) -> None:
        self.db = db
        self.embedder = embedder
        self.store = store
        self.batch = batch
        self.flush_every_s = flush_every_s
        self.max_sentences = max_sentences  # 0: no sentence vectors
        self.sentences = sentences if sentences is not None else SentenceVectorStore(db)
        # the sentences-only pass walks chunk ids upwards from here; None: nothing left to look for
        self._sentence_backlog_after: int | None = 0 if max_sentences > 0 else None
        self._sentence_pass = 0  # bumped by every resync: a pass that raced one leaves the new pass alone
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    def resync(self) -> int:
        """Mark chunks whose vector is missing from the index; drop index entries with no chunk.

        Chunks with their vector but without sentence vectors are counted too and filled by the
        sentences-only pass (their passage vector is kept)."""
        requeued = 0
        with self.db.session(write=True) as s:
            for kb_id, kb in s.execute(select(KnowledgeBase.id, KnowledgeBase.name)):
                in_index = self.store.ids(kb)
                rows = s.execute(select(Chunk.id, Chunk.embedded).where(Chunk.kb_id == kb_id)).all()
                in_db = {r.id for r in rows}
                missing = [r.id for r in rows if r.embedded and r.id not in in_index]
                for i in range(0, len(missing), 500):
                    s.execute(update(Chunk).where(Chunk.id.in_(missing[i : i + 500])).values(embedded=False))
                requeued += len(missing)
                orphans = in_index - in_db
                if orphans:
                    self.store.delete(kb, sorted(orphans))
                if self.max_sentences > 0:
                    missing_set = set(missing)
                    lacking = self.sentences.lacking(s, kb_id=kb_id)
                    requeued += sum(1 for i in lacking if i not in missing_set)
            s.execute(
                update(Document)
                .where(Document.id.in_(select(Chunk.document_id).where(Chunk.embedded.is_(False))))
                .values(vector_status="pending")
            )
        self.store.flush()
        if self.max_sentences > 0:
            self._sentence_pass += 1
            self._sentence_backlog_after = 0
        return requeued

    def requeue(self) -> int:
        """Re-queue every chunk whose vector the index lacks and wake the worker; returns how many."""
        requeued = self.resync()
        self.wake()
        if requeued:
            log.warning("vectors_requeued", extra={"requeued_chunks": requeued})
        return requeued

    def run_once(self) -> int:
        """Embed one batch of pending chunks (passage and sentences); with none pending, fill one batch of
        sentence vectors that are missing. Returns how many chunks were handled."""
        stmt = (
            select(
                Chunk.id,
                Chunk.kb_id,
                Chunk.anchor,
                Chunk.text,
                Document.title,
                Document.id,
                KnowledgeBase.name,
            )
            .join(Document, Document.id == Chunk.document_id)
            .join(KnowledgeBase, KnowledgeBase.id == Chunk.kb_id)
            .where(Chunk.embedded.is_(False))
            .order_by(Chunk.id)
            .limit(self.batch)
        )
        with self.db.session() as s:
            rows = s.execute(stmt).all()
        if not rows:
            return self._fill_sentences()
        vectors = self.embedder.embed_passages([indexable_text(r.title, r.anchor, r.text) for r in rows])
        sentence_rows = self._embed_sentences({r[0]: r.text for r in rows})
        by_kb: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            by_kb.setdefault(r.name, []).append(i)
        ids = [r[0] for r in rows]
        with self.db.session(write=True) as s:
            # a chunk deleted while we embedded must not come back into the index
            alive = set(s.scalars(select(Chunk.id).where(Chunk.id.in_(ids))))
            for kb, idx in by_kb.items():
                keep = [i for i in idx if rows[i][0] in alive]
                self.store.upsert(kb, [rows[i][0] for i in keep], vectors[keep])
            self.sentences.replace(s, {i: v for i, v in sentence_rows.items() if i in alive})
            s.execute(update(Chunk).where(Chunk.id.in_(alive)).values(embedded=True))
            doc_ids = {r[5] for r in rows}
            still_pending = set(
                s.scalars(select(Chunk.document_id).where(Chunk.document_id.in_(doc_ids), Chunk.embedded.is_(False)))
            )
            done = doc_ids - still_pending
            if done:
                s.execute(
                    update(Document)
                    .where(Document.id.in_(done), Document.status != DocumentStatus.FAILED)
                    .values(vector_status="ready", status=DocumentStatus.READY)
                )
        return len(rows)

    def _embed_sentences(self, texts: dict[int, str]) -> dict[int, list[tuple[str, np.ndarray]]]:
        """chunk id → [(sentence, unit float32 vector)] for the first ``max_sentences`` sentences, one embedding call."""
        if self.max_sentences <= 0:
            return {}
        per_chunk = {chunk_id: chunk_sentences(text, self.max_sentences) for chunk_id, text in texts.items()}
        flat = [sentence for sentences in per_chunk.values() for sentence in sentences]
        if not flat:
            return {}
        vectors = normalised(self.embedder.embed_passages(flat))
        out: dict[int, list[tuple[str, np.ndarray]]] = {}
        pos = 0
        for chunk_id, sentences in per_chunk.items():
            out[chunk_id] = [(sentence, vectors[pos + j]) for j, sentence in enumerate(sentences)]
            pos += len(sentences)
        return out

    def _fill_sentences(self) -> int:
        """One batch of chunks that have their passage vector but no sentence vectors (after ``resync``)."""
        after, current = self._sentence_backlog_after, self._sentence_pass
        if after is None:
            return 0
        with self.db.session() as s:
            ids = self.sentences.lacking(s, after=after, limit=self.batch)
            texts = {r[0]: r[1] for r in s.execute(select(Chunk.id, Chunk.text).where(Chunk.id.in_(ids)))}
        if not ids:
            if self._sentence_pass == current:  # a resync meanwhile started a new pass: keep it
                self._sentence_backlog_after = None
            return 0
        rows = self._embed_sentences(texts)
        with self.db.session(write=True) as s:
            alive = set(s.scalars(select(Chunk.id).where(Chunk.id.in_(ids), Chunk.embedded.is_(True))))
            self.sentences.replace(s, {i: v for i, v in rows.items() if i in alive})
        # ids only grow: a chunk that yields no sentence is not asked for again in this pass
        if self._sentence_pass == current:
            self._sentence_backlog_after = max(ids)
        return len(ids)

    def drain(self) -> int:
        """Embed everything pending now (CLI and tests)."""
        total = 0
        while n := self.run_once():
            total += n
        self.store.flush()
        return total

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        """Start the worker; again after ``stop`` too (a replica that leads again on a shared vector server)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="vector-filler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self.store.flush()
        except Exception:  # a store that is down must not stop the shutdown; a restart resyncs the index
            log.exception("vector_flush_failed")

    def _loop(self) -> None:
        last_flush = time.monotonic()
        while not self._stop.is_set():
            try:
                n = self.run_once()
                self.last_error = None
            except Exception as exc:  # keep the worker alive; the error is reported by health
                n = 0
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("vector_fill_failed")
            if time.monotonic() - last_flush > self.flush_every_s or (n == 0 and last_flush):
                try:
                    self.store.flush()
                except Exception as exc:
                    self.last_error = f"flush failed: {exc}"
                    log.exception("vector_flush_failed")
                last_flush = time.monotonic()
            if n == 0:
                self._wake.wait(5.0)
                self._wake.clear()
