"""The table of a chunk's background sentence vectors (migration 0007).

Kept out of ``models.py`` so the schema of the rest stays as it was; it shares ``Base``, so Alembic
and the application see one metadata. Rows hang off their chunk with ``ON DELETE CASCADE``: a deleted
or re-ingested document's chunks take their sentence vectors with them, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from ragvigil.storage.models import Base

__all__ = ["SentenceVector"]


class SentenceVector(Base):
    """One sentence of one chunk: its ``sentence_key`` and its e5 passage vector (float32 bytes, L2-normalised)."""

    __tablename__ = "sentence_vectors"

    chunk_id: Mapped[int] = mapped_column(ForeignKey("chunks.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
