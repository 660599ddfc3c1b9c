"""The retrieval smoke test of a restored backup: the normal knowledge builder over the restored data dir.

Why here and not in ``ops.backup``: it needs the whole knowledge subsystem (``ops`` never imports it);
the backup code takes it as a callable. One embedded chunk's own text must find that chunk among the
top hits by vector search alone — the restored vectors answer without re-embedding anything — and
by hybrid search.
"""

from __future__ import annotations

from sqlalchemy import select

from ragvigil.config import Settings
from ragvigil.knowledge.build import build_knowledge
from ragvigil.storage.db import Database
from ragvigil.storage.models import Chunk, KnowledgeBase

TOP_K = 5


class SmokeTestFailed(RuntimeError):
    """The restored copy did not find what it holds."""


def retrieval_smoke(settings: Settings) -> str:
    """Search one chunk's text in the restored copy of ``settings``; what was found, or ``SmokeTestFailed``."""
    db = Database(settings.db_url)
    try:
        with db.session() as s:
            row = s.execute(
                select(Chunk.id, Chunk.text, KnowledgeBase.name)
                .join(KnowledgeBase, KnowledgeBase.id == Chunk.kb_id)
                .where(Chunk.embedded.is_(True))
                .order_by(Chunk.id)
                .limit(1)
            ).first()
        if row is None:
            return "no embedded chunk to search (empty knowledge base)"
        chunk_id, text, kb = row
        knowledge = build_knowledge(settings, db)
        try:
            for mode in ("vector", "hybrid"):
                found = knowledge.retriever.search(kb, text, k=TOP_K, mode=mode)
                if found.vector_error:
                    raise SmokeTestFailed(f"{mode} search failed: {found.vector_error}")
                if chunk_id not in [h.chunk_id for h in found.hits]:
                    raise SmokeTestFailed(
                        f"chunk {chunk_id} of {kb!r} is not in the top {TOP_K} of its own text ({mode})"
                    )
        finally:
            knowledge.retriever.mode.stop()
        return f"chunk {chunk_id} of {kb!r} found by its own text (vector and hybrid, top {TOP_K})"
    finally:
        db.dispose()
