"""Knowledge bases, their documents and chunks in the database, plus the in-memory BM25 view.

The BM25 view of a knowledge base is refreshed when the stored chunks change (checked at
most every ``refresh_s`` seconds), so a document ingested by the CLI or another replica
becomes searchable without a restart. A small index is rebuilt on the spot (a new document
is searchable at once); a large one (rebuilding 100k chunks takes seconds) is rebuilt in a
background thread while queries keep using the previous index. For a very large view (200k chunks
and more) even the check, one aggregate query over the served chunks, runs in a background thread: a
query is answered from the cached view meanwhile and never waits for it.

A quarantined document (``Document.quarantined``: its repair lost characters) is left out of the
view, so neither BM25 nor the vector side (whose hits are mapped to records of this view) can
retrieve it; releasing it changes the view's signature, and the next refresh serves it.

Chunks of a generation a reindex is still building (``Chunk.staged_by`` set) are left out of the view
too; the reindex switches them in with one transaction and then ``reload``s the view at once.

An unknown knowledge base is an error (``KnowledgeBaseNotFound``), never an empty index: asking
a knowledge base that does not exist must say so, not answer "nothing found".
"""

from __future__ import annotations

import logging
import sys
import threading
import time

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from ragvigil.errors import NotFound
from ragvigil.knowledge.lexical import Bm25Index, ChunkRecord
from ragvigil.ops import metrics
from ragvigil.storage.db import Database
from ragvigil.storage.models import Chunk, Document, DocumentQuality, KnowledgeBase

log = logging.getLogger(__name__)

# what the view of a knowledge base was built from: served chunks (count, newest id, sum of ids), quarantined
# documents; see ``Catalog._signature``
Signature = tuple[int, int, int, int]


class KnowledgeBaseNotFound(NotFound):
    """No knowledge base of that name (the name is the exception's argument)."""

    code = "kb_not_found"
    message_template = "no knowledge base named {arg}"


class Catalog:
    def __init__(
        self,
        db: Database,
        refresh_s: float = 2.0,
        background_rebuild_at: int = 5000,
        background_check_at: int = 200_000,
    ) -> None:
        self.db = db
        self.refresh_s = refresh_s
        self.background_rebuild_at = background_rebuild_at
        # from this many chunks the signature query runs in a background thread, never inside a query
        self.background_check_at = background_check_at
        self._checking: set[str] = set()  # knowledge bases whose background check is in flight
        self._checking_lock = threading.Lock()  # held only to look at or change ``_checking``
        self._bm25: dict[str, tuple[Signature, Bm25Index]] = {}
        self._checked: dict[str, float] = {}
        self._building: set[str] = set()
        self._versions: dict[str, int] = {}  # bumped each time a knowledge base's view is replaced
        self._lock = threading.Lock()

    def kb_id(self, name: str, create: bool = False) -> int:
        with self.db.session(write=create) as s:
            kb_id = s.scalar(select(KnowledgeBase.id).where(KnowledgeBase.name == name))
            if kb_id is not None:
                return kb_id
            if not create:
                raise KnowledgeBaseNotFound(name)
            kb = KnowledgeBase(name=name)
            s.add(kb)
            s.flush()
            return kb.id

    def known(self, kb: str) -> bool:
        """Whether ``kb`` is known to exist without asking the database (its index is loaded).

        Knowledge bases are never deleted, so a loaded one still exists; callers on the event loop
        use this to skip a thread hop, and ``require`` otherwise.
        """
        return kb in self._bm25

    def require(self, kb: str) -> None:
        """Raise ``KnowledgeBaseNotFound`` unless ``kb`` exists."""
        if not self.known(kb):
            self.kb_id(kb)

    def kb_names(self) -> list[str]:
        with self.db.session() as s:
            return list(s.scalars(select(KnowledgeBase.name).order_by(KnowledgeBase.name)))

    def _signature(self, kb_id: int) -> Signature:
        """Served chunks (count, newest id, sum of ids) and quarantined documents: any change to what may be
        retrieved, made here or by another replica, one aggregate query per ``refresh_s``.

        Chunk ids are never reused (a sequence; ``AUTOINCREMENT`` in SQLite) and a chunk's text never changes
        in place (a new version is new chunks), so the set of served ids says what the view holds. Count and
        newest id alone miss a set that changed at both ends at once: a reindex's switch (old ids out, staged
        ids in, equal counts) while a document ingested meanwhile holds the newest id, or a release and a
        deletion of the same size; the sum of ids catches those."""
        served = (
            select(func.count(Chunk.id), func.max(Chunk.id), func.coalesce(func.sum(Chunk.id), 0))
            .join(Document, Document.id == Chunk.document_id)
            .where(Chunk.kb_id == kb_id, Chunk.staged_by.is_(None), Document.quarantined.is_(False))
        )
        with self.db.session() as s:
            row = s.execute(served).one()
            held = s.scalar(
                select(func.count(Document.id)).where(Document.kb_id == kb_id, Document.quarantined.is_(True))
            )
        return int(row[0]), int(row[1] or 0), int(row[2] or 0), int(held or 0)

    def quarantined_counts(self) -> dict[str, int]:
        """Quarantined documents per knowledge base (every knowledge base, 0 included)."""
        stmt = (
            select(KnowledgeBase.name, func.count(Document.id))
            .outerjoin(Document, (Document.kb_id == KnowledgeBase.id) & Document.quarantined.is_(True))
            .group_by(KnowledgeBase.name)
        )
        with self.db.session() as s:
            return {name: int(n) for name, n in s.execute(stmt)}

    def publish_quarantined(self) -> None:
        """Set ``ragvigil_documents_quarantined`` for every knowledge base: at start and after a change."""
        for name, n in self.quarantined_counts().items():
            metrics.DOCUMENTS_QUARANTINED.labels(name).set(n)

    def version(self, kb: str) -> int:
        """A number that changes whenever the view retrieval reads for ``kb`` is replaced (ingest, delete,
        quarantine, release, here or by another process): what an answer kept for later is valid for.

        Checks the view first, as a search would (at most every ``refresh_s``)."""
        self.bm25(kb)
        return self._versions.get(kb, 0)

    def _install(self, kb: str, sig: Signature, index: Bm25Index) -> None:
        """Serve ``index`` for ``kb`` from now on (the caller holds the lock)."""
        self._bm25[kb] = (sig, index)
        self._versions[kb] = self._versions.get(kb, 0) + 1

    def bm25(self, kb: str) -> Bm25Index:
        """The current BM25 index of ``kb``; ``KnowledgeBaseNotFound`` if there is no such knowledge base.

        A view of ``background_check_at`` chunks or more is checked by a background thread, one at a time
        per knowledge base, while the query is answered from it as it is: the signature is an aggregate
        over all the served chunks (tens of milliseconds at 1M), and the lock it is read under may be held by
        a reindex's ``reload``. A smaller view is checked in the query, so a change is served at once."""
        now = time.monotonic()
        cached = self._bm25.get(kb)
        if cached is not None and now - self._checked.get(kb, 0) < self.refresh_s:
            return cached[1]
        if cached is not None and len(cached[1]) >= self.background_check_at:
            with self._checking_lock:
                if kb not in self._checking:
                    self._checking.add(kb)
                    threading.Thread(target=self._check_in_background, args=(kb,), daemon=True).start()
            return cached[1]
        with self._lock:
            return self._refresh(kb)

    def _check_in_background(self, kb: str) -> None:
        try:
            with self._lock:
                self._refresh(kb)
        except Exception:
            log.exception("bm25_check_failed", extra={"kb": kb})
        finally:
            with self._checking_lock:
                self._checking.discard(kb)

    def _refresh(self, kb: str) -> Bm25Index:
        """Check the signature of ``kb``'s view and replace or start rebuilding it if it changed (the caller
        holds the lock)."""
        cached = self._bm25.get(kb)
        try:
            kb_id = self.kb_id(kb)
            sig = self._signature(kb_id)
        except SQLAlchemyError:
            if cached is None:
                raise
            # the database is down: keep answering from the last loaded index
            log.warning("bm25_refresh_failed_serving_cached", extra={"kb": kb})
            self._checked[kb] = time.monotonic()
            return cached[1]
        self._checked[kb] = time.monotonic()
        if cached is not None and cached[0] == sig:
            return cached[1]
        metrics.DOCUMENTS_QUARANTINED.labels(kb).set(sig[3])  # also a change made by the CLI or a replica
        if cached is not None and len(cached[1]) >= self.background_rebuild_at:
            if kb not in self._building:
                self._building.add(kb)
                threading.Thread(target=self._rebuild, args=(kb, kb_id, sig), daemon=True).start()
            return cached[1]
        index = Bm25Index(self._load_records(kb_id))
        self._install(kb, sig, index)
        return index

    def _rebuild(self, kb: str, kb_id: int, sig: Signature) -> None:
        try:
            index = Bm25Index(self._load_records(kb_id))
            with self._lock:
                current = self._bm25.get(kb)
                if current is None or current[0] != self._signature(kb_id) or sig == current[0]:
                    self._install(kb, sig, index)  # never over a newer view a reindex's `reload` put in meanwhile
        except Exception:
            log.exception("bm25_rebuild_failed", extra={"kb": kb})
        finally:
            with self._lock:
                self._building.discard(kb)
                self._checked.pop(kb, None)  # look again: chunks may have changed meanwhile

    def invalidate(self, kb: str) -> None:
        self._checked.pop(kb, None)

    def reload(self, kb: str) -> Bm25Index:
        """Rebuild the view of ``kb`` now, whatever its size, and serve it from the next query on.

        A reindex's switch calls it before deleting the old generation's vectors, so no query sees the
        new chunks' ids missing from the view or the old ones missing from the vector index."""
        kb_id = self.kb_id(kb)
        with self._lock:
            sig = self._signature(kb_id)
            index = Bm25Index(self._load_records(kb_id))
            self._install(kb, sig, index)  # a new version: answers kept for the old generation are stale
            self._checked[kb] = time.monotonic()
        return index

    def _load_records(self, kb_id: int) -> list[ChunkRecord]:
        stmt = (
            select(
                Chunk.id,
                Chunk.document_id,
                Document.title,
                Document.source,
                Chunk.anchor,
                Chunk.text,
                Chunk.tokens,
                Document.quality,
                Document.released_at,
                Document.warnings,
            )
            .join(Document, Document.id == Chunk.document_id)
            .where(Chunk.kb_id == kb_id, Chunk.staged_by.is_(None), Document.quarantined.is_(False))
            .order_by(Chunk.id)
        )
        # One object per document for what its chunks share (id, title, source, quality, warnings) and one
        # string per distinct token: at 1M chunks, a fresh string per token and per chunk's copy of its
        # document's fields made the view ~4 times the size. The rows are streamed: buffered whole (what the
        # ORM does by default), their freed copies left the heap too fragmented to give back.
        intern = sys.intern
        docs: dict[str, tuple[str, str, str, str | None, tuple[str, ...]]] = {}
        records: list[ChunkRecord] = []
        with self.db.session() as s:
            for r in s.execute(stmt.execution_options(yield_per=5000)):
                doc = docs.get(r.document_id)
                if doc is None:
                    quality = source_quality(r.quality, r.released_at is not None)
                    doc = docs[r.document_id] = (r.document_id, r.title, r.source, quality, tuple(r.warnings or ()))
                document_id, title, source, quality, warnings = doc
                tokens = tuple(map(intern, r.tokens.split()))
                records.append(
                    ChunkRecord(r.id, document_id, title, source, intern(r.anchor), r.text, tokens, quality, warnings)
                )
        return records


def source_quality(quality: str | None, released: bool) -> str | None:
    """What a source says about its document: ``released`` (an operator let a damaged one answer),
    ``damaged``, ``repaired``, or ``None`` for a clean document."""
    if released:
        return "released"
    return None if quality in (None, DocumentQuality.CLEAN) else quality
