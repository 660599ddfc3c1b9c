"""Re-index a knowledge base from its kept originals with the current chunker and model, while it serves.

Why a new generation and one switch: a rebuild of 10k documents takes hours of embedding, and answers
must come from a complete index all that time. Each document's new chunks are written beside the
served ones (``Chunk.staged_by`` = the job's id: the BM25 view leaves them out) and their vectors are
kept in the job's work directory (``<data dir>/reindex/<job>/``), so the served vector index is not
crowded by near-copies of its own vectors while the job runs. When every document is done the new
vectors go into the index under their new ids (which no query maps to a record yet), one transaction
deletes the old generation's chunk rows and clears ``staged_by`` on the new ones, the catalog's view is
rebuilt at once, and only then are the old vectors deleted: no query ever sees half of either.

One bad record never blocks the rest: a document without an original (stored before originals were
kept), or one that no longer loads, is reported (``ReindexJob.errors``) and keeps its served chunks.
Anything else failing (database, vector store, embedder) fails the job: its staged chunks and vectors
are deleted and the old generation keeps serving. A job interrupted by a stop or a crash is left
``interrupted`` (or found stale by its heartbeat) and its leftovers are removed by the next start.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from ragvigil.errors import NotFound, RagvigilError
from ragvigil.knowledge.embeddings import Embedder
from ragvigil.knowledge.ingest import Ingestor, indexable_text
from ragvigil.knowledge.loaders import LoadError
from ragvigil.knowledge.originals import OriginalMissing, OriginalStore, read_original
from ragvigil.knowledge.sentence_vectors import SentenceVectorStore, chunk_sentences, normalised
from ragvigil.knowledge.vectorstore import VectorStore
from ragvigil.ops import metrics
from ragvigil.storage.db import Database
from ragvigil.storage.models import Chunk, Document, DocumentStatus, ReindexJob, utcnow

log = logging.getLogger(__name__)

RUNNING, DONE, FAILED, INTERRUPTED = "running", "done", "failed", "interrupted"
# a running job whose heartbeat is older than this died with its process (a heartbeat comes every batch)
STALE_AFTER = timedelta(minutes=5)
_IN_CLAUSE = 500
RUNNER = f"{socket.gethostname()[:50]}:{os.getpid()}"  # who runs a job: a restart can tell its own job died


class ReindexRunning(RagvigilError):
    """A reindex of this knowledge base is already running (one at a time per knowledge base)."""

    status = 409
    code = "reindex_running"


class ReindexNotFound(NotFound):
    """No reindex has run for this knowledge base."""

    code = "reindex_not_found"
    message_template = "no reindex of knowledge base {arg} has run"


class _Stopped(Exception):
    """The runtime is stopping: the job ends ``interrupted`` and its leftovers go on the next start."""


@dataclass(frozen=True)
class JobStatus:
    """What ``GET /api/v1/kb/{kb}/reindex`` and ``ragvigil reindex --status`` show."""

    job_id: str
    kb: str
    state: str
    total: int
    done: int
    skipped: int
    failed: int
    errors: list[str]
    requested_by: str
    started_at: str
    heartbeat_at: str
    finished_at: str | None

    @classmethod
    def of(cls, job: ReindexJob) -> JobStatus:
        return cls(
            job.id,
            job.kb,
            job.state,
            job.total,
            job.done,
            job.skipped,
            job.failed,
            list(job.errors or ()),
            job.requested_by,
            job.started_at.isoformat(),
            job.heartbeat_at.isoformat(),
            job.finished_at.isoformat() if job.finished_at else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Reindexer:
    """Starts, runs and reports reindex jobs; one per knowledge base at a time."""

    def __init__(
        self,
        ingestor: Ingestor,
        originals: OriginalStore,
        embedder: Embedder,
        store: VectorStore,
        sentences: SentenceVectorStore,
        work_dir: Path,
        max_sentences: int = 12,
        batch: int = 16,
    ) -> None:
        self.ingestor = ingestor
        self.catalog = ingestor.catalog
        self.db = ingestor.db
        self.originals = originals
        self.embedder = embedder  # the vector filler's engine: reindexing never makes questions wait
        self.store = store
        self.sentences = sentences
        self.max_sentences = max_sentences
        self.batch = batch
        self.work_dir = work_dir  # one directory per job: its staged vectors, until the switch
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._stop = threading.Event()

    # -- jobs ----------------------------------------------------------------
    def begin(self, kb: str, by: str, thread: threading.Thread | None = None) -> str:
        """Record a new running job for ``kb`` (``ReindexRunning`` if one is live) and return its id.

        ``thread`` (default: the calling one) is the job's from now on, registered under the same lock, so a
        second request never takes this job for one whose thread is gone."""
        self.catalog.kb_id(kb)  # KnowledgeBaseNotFound
        with self._lock, self.db.session(write=True) as s:
            if s.get_bind().dialect.name == "postgresql":
                # replicas sharing the database take turns here, so a second one sees the first's job (on
                # SQLite the second writer's transaction fails instead: one database file, one writer)
                s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(f"reindex:{kb}")})
            live = s.scalar(
                select(ReindexJob)
                .where(ReindexJob.kb == kb, ReindexJob.state == RUNNING)
                .order_by(ReindexJob.started_at)
            )
            if live is not None:
                if self._alive(live):
                    raise ReindexRunning(
                        f"a reindex of {kb} is already running (job {live.id}, {live.done}/{live.total})"
                    )
                live.state, live.finished_at = INTERRUPTED, utcnow()  # its process is gone: start afresh
            job = ReindexJob(kb=kb, state=RUNNING, requested_by=by[:160], errors=[], runner=RUNNER)
            s.add(job)
            s.flush()
            self._threads[kb] = thread or threading.current_thread()
            return job.id

    def _alive(self, job: ReindexJob) -> bool:
        return job_alive(job, self._threads)

    def start(self, kb: str, by: str) -> str:
        """Begin a job and run it on a background thread; returns its id at once."""
        job: list[str] = []
        thread = threading.Thread(target=lambda: self.run_logged(kb, job[0]), name=f"reindex-{kb}", daemon=True)
        job.append(self.begin(kb, by, thread))
        thread.start()
        return job[0]

    def run_logged(self, kb: str, job_id: str) -> None:
        """``run``, its failure logged (the job row says failed and why): the body of a job's thread."""
        try:
            self.run(kb, job_id)
        except Exception:  # the job row says failed; nothing else runs on this thread
            log.exception("reindex_failed", extra={"kb": kb, "job_id": job_id})

    def status(self, kb: str) -> JobStatus:
        """The newest job of ``kb`` (``ReindexNotFound`` if none)."""
        return latest_job(self.db, kb, self._threads)

    def recover(self) -> int:
        """At start: jobs whose process is gone end ``interrupted`` and their staged rows go, before the vector
        filler's resync would take those rows for chunks lacking vectors. Returns how many jobs were recovered."""
        try:
            with self.db.session(write=True) as s:
                dead = [
                    j for j in s.scalars(select(ReindexJob).where(ReindexJob.state == RUNNING)) if not self._alive(j)
                ]
                for job in dead:
                    job.state, job.finished_at = INTERRUPTED, utcnow()
                kbs = {job.kb for job in dead}
            for kb in kbs:
                self.discard_staged(kb)
        except SQLAlchemyError:  # a database not at this release's schema: the migration check reports it
            log.exception("reindex_recovery_failed")
            return 0
        if kbs:
            log.warning("reindex_recovered", extra={"jobs": len(dead), "kbs": sorted(kbs)})
        return len(dead)

    def wait(self, kb: str, timeout: float | None = None) -> None:
        """Wait for the running job of ``kb`` in this process to end (CLI and tests)."""
        thread = self._threads.get(kb)
        if thread is not None:
            thread.join(timeout)

    def stop(self) -> None:
        """Interrupt running jobs at their next batch; each ends ``interrupted`` with the old generation serving."""
        self._stop.set()
        for thread in list(self._threads.values()):
            if thread is not threading.current_thread() and thread.ident is not None:
                thread.join(30.0)

    # -- the work ------------------------------------------------------------
    def run(self, kb: str, job_id: str) -> JobStatus:
        """Build the new generation of ``kb`` document by document, then switch it in."""
        metrics.REINDEX_RUNNING.inc()
        try:
            kb_id = self.catalog.kb_id(kb)
            self.discard_staged(kb, keep=job_id)  # what an interrupted job left behind
            with self.db.session() as s:
                docs = s.execute(
                    select(Document.id, Document.source, Document.original_digest, Document.content_hash)
                    .where(Document.kb_id == kb_id, Document.status != DocumentStatus.FAILED)
                    .order_by(Document.source)
                ).all()
            self._update(job_id, total=len(docs))
            built: dict[str, tuple[str, int, str]] = {}  # document id → (content hash, chunks, title)
            for doc in docs:
                self._check_stop()
                outcome, error = self._rebuild_one(kb, kb_id, job_id, doc, built)
                metrics.REINDEX_DOCUMENTS.labels(outcome).inc()
                self._progress(job_id, outcome, error)
            self._check_stop()
            self._switch(kb, job_id, built)
        except _Stopped:
            self._finish(job_id, INTERRUPTED)
            log.warning("reindex_interrupted", extra={"kb": kb, "job_id": job_id})
            self._discard_quietly(kb)
        except Exception as exc:
            self._finish(job_id, FAILED, f"{type(exc).__name__}: {str(exc)[:300]}")
            self._discard_quietly(kb)
            raise
        finally:
            metrics.REINDEX_RUNNING.dec()
            with self._lock:
                if self._threads.get(kb) is threading.current_thread():
                    del self._threads[kb]
        return self.status(kb)

    def _rebuild_one(
        self, kb: str, kb_id: int, job_id: str, doc: Any, built: dict[str, tuple[str, int, str]]
    ) -> tuple[str, str | None]:
        """Stage one document's new chunks and vectors; ``(outcome, error)`` with outcome rebuilt/skipped/failed."""
        if doc.original_digest is None or not self.originals.exists(doc.original_digest):
            return "skipped", f"{doc.source}: no original kept (ingest the file again to keep it)"
        try:
            raw = read_original(self.originals, doc.original_digest, self.ingestor.limits.max_file_bytes)
            prepared = self.ingestor.prepare(raw, doc.source)
        except (LoadError, ValueError, OriginalMissing) as exc:
            return "failed", f"{doc.source}: {str(exc)[:300]}"
        title, rows = prepared.loaded.title, prepared.rows
        texts = [indexable_text(title, p.anchor, p.text) for p, _ in rows]
        vectors = self._embed(job_id, texts)
        sentence_rows = self._embed_sentences(job_id, [p.text for p, _ in rows])
        with self.db.session(write=True) as s:
            current = s.scalar(select(Document.content_hash).where(Document.id == doc.id))
            if current != doc.content_hash:  # replaced or deleted meanwhile: its new version is already served
                return "skipped", f"{doc.source}: changed while reindexing (its new version is served)"
            chunks = [
                Chunk(
                    document_id=doc.id,
                    kb_id=kb_id,
                    ordinal=p.ordinal,
                    anchor=p.anchor[:500],
                    text=p.text,
                    tokens=tokens,
                    embedded=True,
                    staged_by=job_id,
                )
                for p, tokens in rows
            ]
            s.add_all(chunks)
            s.flush()
            ids = [c.id for c in chunks]
            self.sentences.replace(s, {cid: sentence_rows[i] for i, cid in enumerate(ids) if sentence_rows[i]})
        self._keep_vectors(job_id, len(built), ids, vectors)
        built[doc.id] = (doc.content_hash, len(rows), title)
        return "rebuilt", None

    def _embed(self, job_id: str, texts: list[str]) -> np.ndarray:
        out: list[np.ndarray] = []
        for i in range(0, len(texts), self.batch):
            self._check_stop()
            out.append(np.asarray(self.embedder.embed_passages(texts[i : i + self.batch]), dtype=np.float32))
            self._update(job_id)  # the heartbeat: a long document still shows the job alive
        return np.vstack(out) if out else np.zeros((0, self.embedder.dim), dtype=np.float32)

    def _embed_sentences(self, job_id: str, texts: list[str]) -> list[list[tuple[str, np.ndarray]]]:
        """Per chunk, its sentences with their vectors (as the vector filler computes them)."""
        per_chunk = [chunk_sentences(t, self.max_sentences) for t in texts]
        flat = [x for sentences in per_chunk for x in sentences]
        if not flat:
            return [[] for _ in texts]
        vectors = normalised(self._embed(job_id, flat))
        out, pos = [], 0
        for sentences in per_chunk:
            out.append([(x, vectors[pos + j]) for j, x in enumerate(sentences)])
            pos += len(sentences)
        return out

    def _keep_vectors(self, job_id: str, n: int, ids: list[int], vectors: np.ndarray) -> None:
        """A document's staged vectors in the job's directory (written whole, then renamed)."""
        d = self.work_dir / job_id
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f"{n:08d}.tmp.npz"
        np.savez(tmp, ids=np.asarray(ids, dtype=np.int64), vectors=np.asarray(vectors, dtype=np.float32))
        os.replace(tmp, d / f"{n:08d}.npz")

    def _add_vectors(self, kb: str, job_id: str) -> None:
        """The staged vectors into the served index: ids no view maps yet, so nothing serves them before the switch."""
        d = self.work_dir / job_id
        for path in sorted(d.glob("*[0-9].npz")) if d.is_dir() else ():
            self._check_stop()
            with np.load(path) as part:
                self.store.upsert(kb, part["ids"].tolist(), part["vectors"])
            self._update(job_id)

    def _switch(self, kb: str, job_id: str, built: dict[str, tuple[str, int, str]]) -> None:
        """The new vectors in, then one transaction: the old generation's rows go, the new one's are served;
        then the view, then the old vectors out."""
        self._add_vectors(kb, job_id)
        old_ids: list[int] = []
        with self.db.session(write=True) as s:
            doc_ids = list(built)
            current: dict[str, str] = {}
            for part in _parts(doc_ids):
                current.update(s.execute(select(Document.id, Document.content_hash).where(Document.id.in_(part))).all())
            switch = [d for d in doc_ids if current.get(d) == built[d][0]]
            for part in _parts(switch):
                old_ids += s.scalars(
                    select(Chunk.id).where(Chunk.document_id.in_(part), Chunk.staged_by.is_(None))
                ).all()
            for part in _parts(old_ids):
                s.execute(delete(Chunk).where(Chunk.id.in_(part)))
            for part in _parts(switch):
                s.execute(
                    update(Chunk).where(Chunk.staged_by == job_id, Chunk.document_id.in_(part)).values(staged_by=None)
                )
            for d in switch:
                _, n, title = built[d]
                s.execute(update(Document).where(Document.id == d).values(chunk_count=n, title=title[:512]))
            job = s.get(ReindexJob, job_id)
            if job is not None:
                job.state, job.finished_at, job.heartbeat_at = DONE, utcnow(), utcnow()
        self.catalog.reload(kb)  # the new view before the old vectors go
        self.discard_staged(kb)  # documents that changed meanwhile: their staged rows are not served
        self.store.delete(kb, old_ids)
        self.store.flush()
        shutil.rmtree(self.work_dir / job_id, ignore_errors=True)
        log.warning("reindex_done", extra={"kb": kb, "job_id": job_id, "documents": len(built)})

    def discard_staged(self, kb: str, keep: str | None = None) -> int:
        """Delete staged chunks of ``kb`` (all, or all but job ``keep``'s) with their vectors; returns how many."""
        kb_id = self.catalog.kb_id(kb)
        with self.db.session(write=True) as s:
            stmt = select(Chunk.id).where(Chunk.kb_id == kb_id, Chunk.staged_by.is_not(None))
            if keep is not None:
                stmt = stmt.where(Chunk.staged_by != keep)
            ids = list(s.scalars(stmt))
            for part in _parts(ids):
                s.execute(delete(Chunk).where(Chunk.id.in_(part)))
            running = set(s.scalars(select(ReindexJob.id).where(ReindexJob.state == RUNNING)))
        if ids:
            self.store.delete(kb, ids)  # any that a switch cut short had already added
            self.store.flush()
        for d in self.work_dir.iterdir() if self.work_dir.is_dir() else ():
            if d.name != keep and d.name not in running:
                shutil.rmtree(d, ignore_errors=True)  # the staged vectors of jobs that ended
        return len(ids)

    def _discard_quietly(self, kb: str) -> None:
        try:
            self.discard_staged(kb)
        except Exception:  # the next start removes them; the old generation serves either way
            log.exception("reindex_cleanup_failed", extra={"kb": kb})

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise _Stopped

    # -- the job row -----------------------------------------------------------
    def _update(self, job_id: str, **values: Any) -> None:
        with self.db.session(write=True) as s:
            s.execute(update(ReindexJob).where(ReindexJob.id == job_id).values(heartbeat_at=utcnow(), **values))

    def _progress(self, job_id: str, outcome: str, error: str | None) -> None:
        with self.db.session(write=True) as s:
            job = s.get(ReindexJob, job_id)
            if job is None:
                return
            job.done += 1
            job.skipped += outcome == "skipped"
            job.failed += outcome == "failed"
            if error is not None:
                log.warning("reindex_document_" + outcome, extra={"kb": job.kb, "job_id": job_id, "error": error})
                if len(job.errors) < ReindexJob.ERRORS_KEPT:
                    job.errors = [*job.errors, error]
            job.heartbeat_at = utcnow()

    def _finish(self, job_id: str, state: str, error: str | None = None) -> None:
        try:
            with self.db.session(write=True) as s:
                job = s.get(ReindexJob, job_id)
                if job is None:
                    return
                job.state, job.finished_at = state, utcnow()
                if error is not None:
                    job.errors = [*job.errors, error][-ReindexJob.ERRORS_KEPT :]
        except Exception:
            log.exception("reindex_state_not_saved", extra={"job_id": job_id, "state": state})


def job_alive(job: ReindexJob, threads: dict[str, threading.Thread] | None = None) -> bool:
    """Whether the process running ``job`` still runs it: this one (its thread in ``threads``), another on this
    host (its pid), or one elsewhere (a heartbeat within ``STALE_AFTER``)."""
    if job.runner == RUNNER:
        thread = (threads or {}).get(job.kb)
        return thread is not None and thread.is_alive()
    host, _, pid = (job.runner or "").rpartition(":")
    if host == socket.gethostname()[:50] and pid.isdigit():
        return _pid_alive(int(pid))
    return utcnow() - job.heartbeat_at < STALE_AFTER


def latest_job(db: Database, kb: str, threads: dict[str, threading.Thread] | None = None) -> JobStatus:
    """The newest job of ``kb``; a running one whose process is gone shows as interrupted."""
    with db.session() as s:
        job = s.scalar(select(ReindexJob).where(ReindexJob.kb == kb).order_by(ReindexJob.started_at.desc()))
        if job is None:
            raise ReindexNotFound(kb)
        st = JobStatus.of(job)
    if st.state == RUNNING and not job_alive(job, threads):
        st = JobStatus(**{**st.to_dict(), "state": INTERRUPTED})
    return st


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_key(name: str) -> int:
    """A PostgreSQL advisory lock key (a signed 64-bit integer) for ``name``, the same in every process."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _parts(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + _IN_CLAUSE] for i in range(0, len(items), _IN_CLAUSE)]
