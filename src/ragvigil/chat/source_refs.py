"""An answer's sources kept by reference, and read back in the shape the chat API returns.

Copying every source (title, origin, anchor, a 300-character snippet, warnings) into each answer
made it most of a stored turn's bytes, and the copy went stale when a document was replaced. A
reference keeps what only the turn knows (citation number, scores, whether it was cited) plus
what identifies the passage it quoted (chunk id, document id, the document's content hash) and a
short title, so a source that is gone since still says what it was. Reading resolves all the
references of a page of messages with one query (per ``RESOLVE_BATCH`` chunks).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ragvigil.knowledge.catalog import source_quality
from ragvigil.storage.models import Chunk, Document

TITLE_CHARS = 80  # the title a reference keeps, for a source that is removed since
HASH_CHARS = 16  # of the document's content hash: enough to tell a replaced version apart
SNIPPET_CHARS = 300  # as the answer returned it (chat.pipeline.finish)
RESOLVE_BATCH = 500  # chunk ids per query (SQLite's bound on variables is far above it)


def document_ids(sources: Iterable[dict[str, Any]]) -> set[str]:
    """The documents a list of copied sources quotes (to look up their content hashes in one query)."""
    return {s["document_id"] for s in sources if isinstance(s.get("document_id"), str)}


def to_refs(sources: Sequence[dict[str, Any]], hashes: dict[str, str]) -> list[dict[str, Any]] | None:
    """References for copied sources, or None when one of them does not name a stored chunk (kept copied)."""
    refs = []
    for s in sources:
        chunk_id, doc_id = s.get("chunk_id"), s.get("document_id")
        if not isinstance(chunk_id, int) or isinstance(chunk_id, bool) or doc_id not in hashes:
            return None
        refs.append(
            {
                "n": s.get("n"),
                "chunk_id": chunk_id,
                "document_id": doc_id,
                "hash": hashes[doc_id][:HASH_CHARS],
                "title": str(s.get("title") or "")[:TITLE_CHARS],
                "score": s.get("score"),
                "bm25_score": s.get("bm25_score"),
                "vector_score": s.get("vector_score"),
                "cited": bool(s.get("cited")),
            }
        )
    return refs


def resolve(session: Session, pages: Sequence[Sequence[dict[str, Any]] | None]) -> list[list[dict[str, Any]]]:
    """Each message's references as sources (``None`` → no sources); a gone or replaced one reads as removed."""
    wanted = sorted({r["chunk_id"] for refs in pages for r in refs or ()})
    found: dict[int, Any] = {}
    for i in range(0, len(wanted), RESOLVE_BATCH):
        rows = session.execute(
            select(
                Chunk.id,
                Chunk.anchor,
                Chunk.text,
                Document.id.label("document_id"),
                Document.title,
                Document.source,
                Document.content_hash,
                Document.quality,
                Document.warnings,
                Document.released_at,
            )
            .join(Document, Document.id == Chunk.document_id)
            .where(Chunk.id.in_(wanted[i : i + RESOLVE_BATCH]))
        ).all()
        found.update((r.id, r) for r in rows)
    return [[_source(r, found.get(r["chunk_id"])) for r in refs or ()] for refs in pages]


def _source(ref: dict[str, Any], row: Any) -> dict[str, Any]:
    """The source as the chat API returns it; a chunk gone, moved or of another document version: removed."""
    current = (
        row is not None
        and row.document_id == ref["document_id"]
        and (row.content_hash or "")[:HASH_CHARS] == ref.get("hash", "")
    )
    source = {
        "n": ref.get("n"),
        "document_id": ref["document_id"],
        "chunk_id": ref["chunk_id"],
        "title": row.title if current else ref.get("title", ""),
        "source": row.source if current else "",
        "anchor": row.anchor if current else "",
        "score": ref.get("score"),
        "bm25_score": ref.get("bm25_score"),
        "vector_score": ref.get("vector_score"),
        "cited": bool(ref.get("cited")),
        "snippet": row.text[:SNIPPET_CHARS] if current else "",
        "quality": source_quality(row.quality, row.released_at is not None) if current else None,
        "warnings": list(row.warnings or []) if current else [],
    }
    if not current:  # only then: a current source reads exactly as the answer (and a journaled copy) gave it
        source["removed"] = True
    return source
