"""BM25 over one knowledge base's chunks, kept in memory and rebuilt from stored tokens.

bm25s has no incremental add, but rebuilding from pre-tokenized chunks is fast (tokens
are stored with each chunk, so a rebuild never re-runs jieba). The script of each chunk is worked
out here too, with the rest of the build (in the background for a large base): computed on the first
query after a rebuild instead, it held that query for minutes at 1M chunks.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import bm25s
import numpy as np

from ragvigil.knowledge.crosslingual import Script, script_of

_EMPTY = "\x00"  # bm25s cannot index an empty token list


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    id: int
    document_id: str
    title: str
    source: str
    anchor: str
    text: str
    tokens: tuple[str, ...]
    quality: str | None = None  # None for a clean document, else what its sources say (catalog.source_quality)
    warnings: tuple[str, ...] = ()  # the document's loader warnings, quoted by its sources


class Bm25Index:
    """Immutable BM25 index of one knowledge base; replace it whole to update."""

    def __init__(self, records: list[ChunkRecord]) -> None:
        self.records = records
        self.positions = {r.id: i for i, r in enumerate(records)}
        self._bm25: bm25s.BM25 | None = None
        self._df: Counter[str] = Counter()
        for r in records:
            self._df.update(set(r.tokens))
        # by position: the retriever ranks a mixed-language base's two languages apart
        self.scripts: list[Script | None] = [script_of(r.text) for r in records]
        self.script_set: frozenset[Script | None] = frozenset(self.scripts)
        if records:
            self._bm25 = bm25s.BM25()
            self._bm25.index([list(r.tokens) or [_EMPTY] for r in records], show_progress=False)

    def __len__(self) -> int:
        return len(self.records)

    def idf(self, token: str) -> float:
        """BM25's inverse document frequency of ``token`` in this knowledge base."""
        n, df = len(self.records), self._df.get(token, 0)
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    def search(self, tokens: list[str], k: int) -> list[tuple[ChunkRecord, float]]:
        """Top-k chunks with a positive score, best first."""
        if self._bm25 is None or not tokens:
            return []
        scores = self._bm25.get_scores(tokens)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        return [(self.records[i], float(scores[i])) for i in top if scores[i] > 0]
