"""Ingestion: load → dedupe by content hash → chunk → tokenize → store, atomically per document.

A document is searchable by BM25 as soon as this returns; its vectors are filled in by the
``VectorFiller`` in the background (``vector_status`` shows progress per document).

The file's bytes are kept first (``knowledge.originals``: content-addressed, fsynced) and the document
records which original it was built from, so ``ragvigil reindex`` can rebuild it later; a failing write
of the original fails the file before anything reaches the database (never a document without its
original). An original no document references any more (deleted, replaced) is removed.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import delete, func, select

from ragvigil.config import IngestSettings, RetrievalSettings
from ragvigil.errors import NotFound, RagvigilError
from ragvigil.knowledge.catalog import Catalog
from ragvigil.knowledge.chunking import TextChunk, chunk_text
from ragvigil.knowledge.loaders import LoadedDocument, LoadError, load_bytes, strip_controls
from ragvigil.knowledge.originals import OriginalStore
from ragvigil.knowledge.quarantine import Verdict, judge, log_quarantined
from ragvigil.knowledge.tokenize import Tokenizer
from ragvigil.knowledge.vectorstore import VectorStore, VectorStoreError
from ragvigil.storage.models import Chunk, Document, DocumentStatus, utcnow

log = logging.getLogger(__name__)
Outcome = Literal["created", "updated", "unchanged", "failed"]


@dataclass
class IngestResult:
    source: str
    outcome: Outcome
    document_id: str | None = None
    chunks: int = 0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    quarantined: bool = False  # stored but kept out of answers (``quarantine_reason`` says why)
    quarantine_reason: str | None = None


class DocumentNotFound(NotFound):
    """No document with that id (the id is the exception's argument)."""

    code = "document_not_found"
    message_template = "no document with id {arg}"


class DocumentNotQuarantined(RagvigilError):
    """A release asked for a document that is not quarantined (nothing to release)."""

    status = 409
    code = "document_not_quarantined"


class InvalidSource(ValueError):
    """A file name that cannot be a document's source; the message says why."""


MAX_SOURCE_CHARS = 1024  # the documents.source column
MAX_ERROR_CHARS = 1000  # a failure reason quotes parser messages, which may quote the file


def check_source(source: str) -> None:
    """Refuse a name the documents table cannot hold, on every backend alike (PostgreSQL rejects NUL).

    Raises InvalidSource before anything touches the database.
    """
    if not source.strip():
        raise InvalidSource("file name is empty")
    if len(source) > MAX_SOURCE_CHARS:
        raise InvalidSource(f"file name has {len(source)} characters; at most {MAX_SOURCE_CHARS}")
    for ch in source:
        if unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp"):
            raise InvalidSource(f"file name contains the control character U+{ord(ch):04X}")


def _reason(text: str) -> str:
    return strip_controls(text)[:MAX_ERROR_CHARS]


def indexable_text(title: str, anchor: str, text: str) -> str:
    """What BM25 and the embedder see: the heading path gives a chunk its context."""
    head = anchor if anchor.startswith(title) else f"{title} > {anchor}" if anchor else title
    return f"{head}\n{text}" if head else text


def media_type(source: str) -> str:
    """The media type a file name says (what an object store or a download would be told)."""
    return mimetypes.guess_type(source.rsplit("/", 1)[-1])[0] or "application/octet-stream"


@dataclass
class Prepared:
    """A file made ready to store: its loaded text, the quarantine verdict and (piece, BM25 tokens) per chunk."""

    loaded: LoadedDocument
    verdict: Verdict
    rows: list[tuple[TextChunk, str]]


class Ingestor:
    def __init__(
        self,
        catalog: Catalog,
        tokenizer: Tokenizer,
        settings: RetrievalSettings,
        store: VectorStore | None = None,
        limits: IngestSettings | None = None,
        originals: OriginalStore | None = None,
    ) -> None:
        self.catalog = catalog
        self.db = catalog.db
        self.tokenizer = tokenizer
        self.settings = settings
        self.store = store
        self.limits = limits or IngestSettings()
        self.originals = originals
        # held from keeping an original to its document's commit, and while an unreferenced one is removed:
        # a digest is never removed between another upload's put and that upload's commit
        self._originals_lock = threading.RLock()

    def prepare(self, raw: bytes, source: str, time_left: float | None = None) -> Prepared:
        """Load, judge, chunk and tokenize one file with the current settings (raises ``LoadError``)."""
        loaded = load_bytes(raw, source, self.limits, time_left)
        verdict = judge(loaded, self.limits.quarantine_below_recovered)
        pieces = chunk_text(loaded.text, loaded.title, self.settings.chunk_chars, self.settings.chunk_overlap)
        rows = [(p, " ".join(self.tokenizer.tokens(indexable_text(loaded.title, p.anchor, p.text)))) for p in pieces]
        return Prepared(loaded, verdict, rows)

    def ingest_bytes(self, kb: str, source: str, raw: bytes, deadline: float | None = None) -> IngestResult:
        """Ingest one file's bytes into ``kb``; failures are recorded on the document, not raised.

        A source the documents table cannot hold is a failure reported only in the result.
        ``deadline`` (``time.monotonic()``) bounds one upload: a file reached after it is a failure
        reported only in the result (the file did nothing wrong), and PDF extraction is cut to it.
        """
        try:
            check_source(source)
        except InvalidSource as exc:
            return IngestResult(source, "failed", error=str(exc))
        kb_id = self.catalog.kb_id(kb, create=True)
        digest = hashlib.sha256(raw).hexdigest()
        with self.db.session() as s:
            doc = s.scalar(select(Document).where(Document.kb_id == kb_id, Document.source == source))
            if doc is not None and doc.content_hash == digest and doc.status != DocumentStatus.FAILED:
                if doc.original_digest is None and self.originals is not None:
                    self._keep_original_of(doc.id, source, raw)  # stored before originals were kept
                return IngestResult(
                    source,
                    "unchanged",
                    doc.id,
                    doc.chunk_count,
                    warnings=list(doc.warnings),
                    quarantined=doc.quarantined,
                    quarantine_reason=doc.quarantine_reason if doc.quarantined else None,
                )
        time_left = None if deadline is None else deadline - time.monotonic()
        if time_left is not None and time_left <= 0:
            spent = self.limits.upload_time_budget_s
            return IngestResult(
                source,
                "failed",
                error=f"the upload spent its {spent:g} s before this file; upload it on its own "
                "(ingest.upload_time_budget_s)",
            )
        try:
            prepared = self.prepare(raw, source, time_left)
        except LoadError as exc:
            return self._record_failure(kb_id, source, digest, len(raw), _reason(str(exc)))
        with self._originals_lock:
            kept = self.originals.put(raw) if self.originals is not None else None  # OriginalNotStored: nothing stored
            try:
                return self._store(kb, kb_id, source, digest, len(raw), kept, prepared)
            except BaseException:
                if kept is not None:
                    self.collect_original(kept)  # no half state: the original goes with the failed commit
                raise

    def _store(
        self, kb: str, kb_id: int, source: str, digest: str, size: int, kept: str | None, prepared: Prepared
    ) -> IngestResult:
        loaded, verdict, rows = prepared.loaded, prepared.verdict, prepared.rows
        old_chunk_ids: list[int] = []
        old_original: str | None = None
        with self.db.session(write=True) as s:  # one transaction: old chunks go and new ones appear together
            doc = s.scalar(select(Document).where(Document.kb_id == kb_id, Document.source == source))
            outcome: Outcome = "updated" if doc is not None else "created"
            if doc is None:
                doc = Document(kb_id=kb_id, source=source)
                s.add(doc)
            else:
                old_chunk_ids = list(s.scalars(select(Chunk.id).where(Chunk.document_id == doc.id)))
                s.execute(delete(Chunk).where(Chunk.document_id == doc.id))
            old_original = doc.original_digest
            doc.title = loaded.title
            doc.content_hash = digest
            if kept is not None:
                doc.original_digest, doc.original_size = kept, size
                doc.original_filename = source.rsplit("/", 1)[-1][:1024]
                doc.original_media_type = media_type(source)
            doc.status = DocumentStatus.SEARCHABLE
            doc.vector_status = "pending"
            doc.error = None
            doc.warnings = loaded.warnings
            doc.chunk_count = len(rows)
            doc.size_bytes = loaded.size_bytes
            was_quarantined = doc.quarantined is True
            doc.quality = verdict.quality
            doc.quarantined = verdict.quarantined  # a new version is judged afresh: a clean copy is served
            doc.quarantine_reason = verdict.reason
            doc.released_by = doc.released_at = None
            s.flush()
            s.add_all(
                Chunk(
                    document_id=doc.id,
                    kb_id=kb_id,
                    ordinal=p.ordinal,
                    anchor=p.anchor[:500],
                    text=p.text,
                    tokens=t,
                )
                for p, t in rows
            )
            doc_id = doc.id
        if old_chunk_ids:
            self._forget_vectors(kb, old_chunk_ids)
        if old_original is not None and old_original != kept:
            self.collect_original(old_original)
        self.catalog.invalidate(kb)
        if verdict.reason is not None:
            log_quarantined(kb, doc_id, source, verdict.reason)
        if verdict.quarantined or was_quarantined:
            self.catalog.publish_quarantined()
        return IngestResult(
            source,
            outcome,
            doc_id,
            len(rows),
            warnings=loaded.warnings,
            quarantined=verdict.quarantined,
            quarantine_reason=verdict.reason,
        )

    def release(self, kb: str, document_id: str, by: str) -> Document:
        """``release_document`` on this ingestor's catalog."""
        return release_document(self.catalog, kb, document_id, by)

    def _record_failure(self, kb_id: int, source: str, digest: str, size: int, reason: str) -> IngestResult:
        with self.db.session(write=True) as s:
            doc = s.scalar(select(Document).where(Document.kb_id == kb_id, Document.source == source))
            if doc is None:
                doc = Document(kb_id=kb_id, source=source, title=source.rsplit("/", 1)[-1][:500])
                s.add(doc)
            elif doc.chunk_count:
                # keep serving the previous good version; say why the new one was refused
                doc.error = f"new version rejected: {reason}"
                s.flush()
                return IngestResult(source, "failed", doc.id, error=reason)
            doc.status = DocumentStatus.FAILED
            doc.vector_status = "none"
            doc.content_hash = digest
            doc.error = reason
            doc.size_bytes = size
            s.flush()
            return IngestResult(source, "failed", doc.id, error=reason)

    def _forget_vectors(self, kb: str, chunk_ids: list[int]) -> None:
        """Drop the vectors of chunks the database no longer has. A vector server that is down must not fail
        a change already committed: the vectors left behind match no chunk (retrieval skips them) and the
        filler's next ``resync`` (at start, or when the store is back) deletes them."""
        if self.store is None:
            return
        try:
            self.store.delete(kb, chunk_ids)
        except VectorStoreError as exc:
            log.warning("vector_delete_deferred", extra={"kb": kb, "chunks": len(chunk_ids), "error": str(exc)})

    def delete_document(self, kb: str, document_id: str) -> None:
        kb_id = self.catalog.kb_id(kb)
        with self.db.session(write=True) as s:
            doc = s.scalar(select(Document).where(Document.kb_id == kb_id, Document.id == document_id))
            if doc is None:
                raise DocumentNotFound(document_id)
            chunk_ids = list(s.scalars(select(Chunk.id).where(Chunk.document_id == doc.id)))
            s.execute(delete(Chunk).where(Chunk.document_id == doc.id))
            was_quarantined = doc.quarantined
            original = doc.original_digest
            s.delete(doc)
        self._forget_vectors(kb, chunk_ids)
        if original is not None:
            self.collect_original(original)
        self.catalog.invalidate(kb)
        if was_quarantined:
            self.catalog.publish_quarantined()

    def documents(self, kb: str) -> list[Document]:
        kb_id = self.catalog.kb_id(kb)
        with self.db.session() as s:
            return list(s.scalars(select(Document).where(Document.kb_id == kb_id).order_by(Document.source)))

    def document(self, kb: str, document_id: str) -> Document:
        kb_id = self.catalog.kb_id(kb)
        with self.db.session() as s:
            doc = s.scalar(select(Document).where(Document.kb_id == kb_id, Document.id == document_id))
            if doc is None:
                raise DocumentNotFound(document_id)
            return doc

    def _keep_original_of(self, document_id: str, source: str, raw: bytes) -> None:
        """Keep the original of a document stored before originals were (its content unchanged)."""
        assert self.originals is not None
        with self._originals_lock:
            kept = self.originals.put(raw)
            with self.db.session(write=True) as s:
                doc = s.get(Document, document_id)
                if doc is not None and doc.original_digest is None:
                    doc.original_digest, doc.original_size = kept, len(raw)
                    doc.original_filename = source.rsplit("/", 1)[-1][:1024]
                    doc.original_media_type = media_type(source)

    def collect_original(self, digest: str) -> bool:
        """Remove the original ``digest`` unless a document still references it; True when removed."""
        if self.originals is None:
            return False
        with self._originals_lock:
            with self.db.session() as s:
                used = s.scalar(select(func.count(Document.id)).where(Document.original_digest == digest))
            if used:
                return False
            self.originals.delete(digest)
            return True

    def pending_vectors(self) -> int:
        with self.db.session() as s:
            return int(s.scalar(select(func.count(Chunk.id)).where(Chunk.embedded.is_(False))) or 0)


def release_document(catalog: Catalog, kb: str, document_id: str, by: str) -> Document:
    """Serve a quarantined document as it is (an operator judged its damage acceptable).

    Raises ``DocumentNotFound``, or ``DocumentNotQuarantined`` when there is nothing to release.
    Its sources say ``quality: released`` from then on; a new upload of it is judged afresh.
    """
    kb_id = catalog.kb_id(kb)
    with catalog.db.session(write=True) as s:
        doc = s.scalar(select(Document).where(Document.kb_id == kb_id, Document.id == document_id))
        if doc is None:
            raise DocumentNotFound(document_id)
        if not doc.quarantined:
            raise DocumentNotQuarantined(f"document {document_id} is not quarantined")
        doc.quarantined = False
        doc.released_by = by[:160]
        doc.released_at = utcnow()
        s.flush()
    catalog.invalidate(kb)
    catalog.publish_quarantined()
    log.warning("document_released", extra={"kb": kb, "document_id": document_id, "released_by": by[:160]})
    return doc
