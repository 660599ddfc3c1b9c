"""Hybrid retrieval: BM25 and vector search fused with reciprocal rank fusion.

Relevance is judged separately from ranking, because RRF scores are relative: a hit is
*relevant* when it covers enough of the query's weighted terms, or when its vector
cosine clears a threshold calibrated for e5 (whose cosines sit in 0.7-1.0).

A query is cut to ``max_query_chars`` before it is tokenized or embedded: what one search costs
must not grow with what a client sends (the embedder further cuts it to one e5 window).
"""

from __future__ import annotations

from ragvigil.config import RetrievalSettings
from ragvigil.knowledge.catalog import Catalog
from ragvigil.knowledge.embeddings import Embedder, EmbedderBusy, EmbedderUnavailable
from ragvigil.knowledge.lexical import ChunkRecord
from ragvigil.knowledge.retrieval_mode import RetrievalMode, vector_side_probe
from ragvigil.knowledge.tokenize import Tokenizer
from ragvigil.knowledge.vectorstore import VectorStore, VectorStoreError
from ragvigil.types import Hit, Retrieval

__all__ = ["Hit", "HybridRetriever", "Retrieval", "term_coverage"]  # Hit and Retrieval live in ragvigil.types


def term_coverage(query_tokens: list[str], chunk_tokens: set[str], idf: dict[str, float]) -> float:
    """Share of the query's IDF weight that the chunk contains (0..1)."""
    uniq = set(query_tokens)
    total = sum(idf.get(t, 1.0) for t in uniq)
    if not total:
        return 0.0
    return sum(idf.get(t, 1.0) for t in uniq if t in chunk_tokens) / total


class HybridRetriever:
    def __init__(
        self,
        catalog: Catalog,
        tokenizer: Tokenizer,
        embedder: Embedder | None,
        store: VectorStore | None,
        settings: RetrievalSettings,
        mode: RetrievalMode | None = None,
    ) -> None:
        self.catalog = catalog
        self.tokenizer = tokenizer
        self.embedder = embedder
        self.store = store
        self.settings = settings
        # hybrid, or lexical_only while the vector side is down (it probes its way back)
        self.mode = mode or RetrievalMode(vector_side_probe(store, embedder, 2.0))

    def search(
        self, kb: str, query: str, k: int | None = None, mode: str = "hybrid", embed_wait_s: float | None = None
    ) -> Retrieval:
        """Rank chunks of ``kb`` for ``query``; ``mode`` is hybrid, bm25 or vector.

        ``embed_wait_s`` bounds the wait for a free embedding engine; when it runs out, BM25 answers
        alone and ``vector_error`` says why (a turn's time budget, not a queue, decides how long).
        While ``self.mode`` is lexical_only a hybrid search skips the vector side at once (it says
        so in ``vector_error``); a store or embedder failure counts towards that switch, a busy
        engine does not (it is load, not an outage).
        """
        k = k or self.settings.top_k
        n = max(self.settings.candidates, k)
        truncated = len(query) > self.settings.max_query_chars
        query = query[: self.settings.max_query_chars]
        tokens = self.tokenizer.tokens(query)
        index = self.catalog.bm25(kb)
        result = Retrieval(query=query, tokens=tokens, hits=[], truncated=truncated)
        if not len(index):
            return result

        lexical = index.search(tokens, n) if mode in ("hybrid", "bm25") else []
        vector: list[tuple[ChunkRecord, float]] = []
        if mode == "hybrid" and self.mode.lexical_only:
            result.vector_error = f"retrieval is lexical_only: {self.mode.reason()}"
        elif mode in ("hybrid", "vector") and self.embedder is not None and self.store is not None:
            try:
                qvec = result.query_vector = self.embedder.embed_query(query, embed_wait_s)
                for chunk_id, score in self.store.search(kb, qvec, n):
                    pos = index.positions.get(chunk_id)
                    if pos is not None:
                        vector.append((index.records[pos], score))
                self.mode.record_success()
            except EmbedderBusy as exc:
                result.vector_error = str(exc)
            except (VectorStoreError, EmbedderUnavailable) as exc:
                result.vector_error = str(exc)
                self.mode.record_failure(str(exc))

        fused: dict[int, Hit] = {}
        for rank, (rec, score) in enumerate(lexical, 1):
            hit = fused.setdefault(rec.id, _hit(rec))
            hit.bm25_score, hit.bm25_rank = score, rank
            hit.score += self.settings.bm25_weight / (self.settings.rrf_k + rank)
        for rank, (rec, score) in enumerate(vector, 1):
            hit = fused.setdefault(rec.id, _hit(rec))
            hit.vector_score, hit.vector_rank = score, rank
            hit.score += self.settings.vector_weight / (self.settings.rrf_k + rank)

        ranked = sorted(fused.values(), key=lambda h: h.score, reverse=True)[:k]
        # floor at 1: in a tiny knowledge base every matched term would otherwise weigh next to nothing
        idf = {t: max(index.idf(t), 1.0) for t in set(tokens)}
        for hit in ranked:
            rec = index.records[index.positions[hit.chunk_id]]
            hit.term_coverage = round(term_coverage(tokens, set(rec.tokens), idf), 4)
            hit.relevant = self._relevant(hit)
        result.hits = ranked
        return result

    def _relevant(self, hit: Hit) -> bool:
        """Enough of the query's terms, or a cosine (nudged by partial term overlap) above the threshold."""
        if hit.term_coverage >= self.settings.min_term_coverage:
            return True
        if hit.vector_score is None:
            return False
        return hit.vector_score + 0.1 * hit.term_coverage >= self.settings.min_vector_score


def _hit(rec: ChunkRecord) -> Hit:
    return Hit(
        chunk_id=rec.id,
        document_id=rec.document_id,
        title=rec.title,
        source=rec.source,
        anchor=rec.anchor,
        text=rec.text,
        score=0.0,
        quality=rec.quality,
        warnings=rec.warnings,
    )
