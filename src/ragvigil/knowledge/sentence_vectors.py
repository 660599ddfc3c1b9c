"""Background vectors of a chunk's sentences: which sentences get one, where they are kept, how a turn reads them.

Why: the extractive generator ranks a passage's sentences by cosine with the question's vector. Embedding
the sentences at question time would cost an engine call per turn; computed by the ``VectorFiller`` next to
the passage vectors, the query vector already in hand is the only query-time cost. Rows live in the
database (``storage.sentence_vectors``), keyed by chunk and ``sentence_key``, so they survive a restart,
go with their chunk (``ON DELETE CASCADE``), and a turn's passages are one indexed read.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import numpy as np
from sqlalchemy import delete, exists, func, insert, select
from sqlalchemy.orm import Session

from ragvigil.knowledge.chunking import split_sentences
from ragvigil.storage.db import Database
from ragvigil.storage.models import Chunk
from ragvigil.storage.sentence_vectors import SentenceVector
from ragvigil.types import sentence_key

__all__ = [
    "MIN_SENTENCE_CHARS",
    "SentenceVectorCache",
    "SentenceVectorReader",
    "SentenceVectorStore",
    "chunk_sentences",
    "normalised",
]

# shorter pieces ("1.", "OK。", a lone bracket) are never an answer on their own: no vector for them
MIN_SENTENCE_CHARS = 4
# the most chunks one read asks for: a turn passes a handful of passages, never more
MAX_READ_CHUNKS = 50


class SentenceVectorReader(Protocol):
    """What the chat pipeline needs: the sentence vectors of a turn's passages, by ``sentence_key``."""

    def read(self, chunk_ids: Sequence[int]) -> dict[str, np.ndarray]: ...


class ChunkVectorReader(Protocol):
    """A store that answers per chunk (``SentenceVectorStore.read_chunks``): what ``SentenceVectorCache`` reads."""

    def read_chunks(self, chunk_ids: Sequence[int]) -> dict[int, dict[str, np.ndarray]]: ...


class SentenceVectorCache:
    """The sentence vectors of recently asked passages, so a popular passage costs a turn no database read.

    Keyed by chunk id and text (a replaced chunk is read afresh). A chunk without vectors yet (the filler
    has not reached it) is not kept: it is read again until they are there. A chunk's rows are written in
    one commit with its passage vector, so a chunk with any has all of them. Bounded, least recent dropped.
    A failing read raises, as the store does: the caller decides what a turn does without them."""

    def __init__(self, store: ChunkVectorReader, max_chunks: int = 512) -> None:
        self.store = store
        self.max_chunks = max_chunks
        self._chunks: OrderedDict[tuple[int, str], dict[str, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._chunks)

    def read(self, passages: Sequence[tuple[int, str]]) -> dict[str, np.ndarray]:
        """The vectors of these (chunk id, text) passages' sentences by ``sentence_key``."""
        out: dict[str, np.ndarray] = {}
        missing: dict[int, tuple[int, str]] = {}
        with self._lock:
            for key in passages:
                found = self._chunks.get(key)
                if found is None:
                    missing[key[0]] = key
                else:
                    self._chunks.move_to_end(key)
                    out.update(found)
        if not missing:
            return out
        read = self.store.read_chunks(list(missing))
        with self._lock:
            for chunk_id, vectors in read.items():
                out.update(vectors)
                self._chunks[missing[chunk_id]] = vectors
                self._chunks.move_to_end(missing[chunk_id])
            while len(self._chunks) > self.max_chunks:
                self._chunks.popitem(last=False)
        return out


def chunk_sentences(text: str, limit: int) -> list[str]:
    """The sentences of a chunk that get a vector: split as the generator splits, at least
    ``MIN_SENTENCE_CHARS`` long, one per key, the first ``limit`` in document order.

    A chunk whose pieces are all shorter keeps its first piece, so every non-empty chunk has at least one
    row and "embedded but without sentence vectors" reliably means "not filled yet"."""
    if limit <= 0:
        return []
    pieces = split_sentences(text)
    out: list[str] = []
    seen: set[str] = set()
    for piece in pieces:
        key = sentence_key(piece)
        if len(piece) < MIN_SENTENCE_CHARS or key in seen:
            continue
        seen.add(key)
        out.append(piece)
        if len(out) >= limit:
            break
    return out or pieces[:1]


def normalised(vectors: np.ndarray) -> np.ndarray:
    """float32 rows of unit length (a zero row stays zero), so a dot product is the cosine."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.ascontiguousarray(v / np.where(norms > 0, norms, 1.0), dtype=np.float32)


class SentenceVectorStore:
    """The ``sentence_vectors`` table: written by the filler inside its own transaction, read once per turn."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def replace(self, s: Session, rows: Mapping[int, Sequence[tuple[str, np.ndarray]]]) -> int:
        """Set the sentence vectors of these chunks to ``rows`` (chunk id → [(sentence, vector)]); returns rows written.

        Runs in the caller's write session, so the rows land in the same commit as the chunk's ``embedded``
        flag: after a crash a chunk has both or neither."""
        ids = list(rows)
        for i in range(0, len(ids), 500):
            s.execute(delete(SentenceVector).where(SentenceVector.chunk_id.in_(ids[i : i + 500])))
        values = [
            {"chunk_id": chunk_id, "key": sentence_key(text), "vector": np.asarray(vec, dtype=np.float32).tobytes()}
            for chunk_id, pairs in rows.items()
            for text, vec in pairs
        ]
        if values:
            s.execute(insert(SentenceVector), values)
        return len(values)

    def read(self, chunk_ids: Sequence[int]) -> dict[str, np.ndarray]:
        """The vectors of these chunks' sentences by ``sentence_key``: one indexed query."""
        ids = list(dict.fromkeys(chunk_ids))[:MAX_READ_CHUNKS]
        if not ids:
            return {}
        with self.db.session() as s:
            rows = s.execute(select(SentenceVector.key, SentenceVector.vector).where(SentenceVector.chunk_id.in_(ids)))
            return {key: np.frombuffer(blob, dtype=np.float32) for key, blob in rows}

    def read_chunks(self, chunk_ids: Sequence[int]) -> dict[int, dict[str, np.ndarray]]:
        """The vectors of these chunks' sentences, per chunk (a chunk without any is absent): one indexed query."""
        ids = list(dict.fromkeys(chunk_ids))[:MAX_READ_CHUNKS]
        out: dict[int, dict[str, np.ndarray]] = {}
        if not ids:
            return out
        stmt = select(SentenceVector.chunk_id, SentenceVector.key, SentenceVector.vector)
        with self.db.session() as s:
            for chunk_id, key, blob in s.execute(stmt.where(SentenceVector.chunk_id.in_(ids))):
                out.setdefault(chunk_id, {})[key] = np.frombuffer(blob, dtype=np.float32)
        return out

    def count(self, chunk_ids: Iterable[int] | None = None) -> int:
        """How many sentence vectors are stored (for these chunks): tests and diagnostics."""
        stmt = select(func.count()).select_from(SentenceVector)
        if chunk_ids is not None:
            stmt = stmt.where(SentenceVector.chunk_id.in_(list(chunk_ids)))
        with self.db.session() as s:
            return int(s.scalar(stmt) or 0)

    @staticmethod
    def lacking(s: Session, after: int = 0, limit: int | None = None, kb_id: int | None = None) -> list[int]:
        """Ids of chunks that have their passage vector (``embedded``) but no sentence vector, by id after ``after``."""
        has_rows = exists().where(SentenceVector.chunk_id == Chunk.id)
        stmt = select(Chunk.id).where(Chunk.embedded.is_(True), Chunk.id > after, ~has_rows).order_by(Chunk.id)
        if kb_id is not None:
            stmt = stmt.where(Chunk.kb_id == kb_id)
        if limit is not None:
            stmt = stmt.limit(limit)
        return list(s.scalars(stmt))
