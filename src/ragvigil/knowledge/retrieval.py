"""Hybrid retrieval: BM25 and vector search fused with reciprocal rank fusion.

Relevance is judged separately from ranking, because RRF scores are relative: a hit is
*relevant* when it covers enough of the query's weighted terms, or when its vector
cosine clears a threshold calibrated for e5 (whose cosines sit in 0.7-1.0).

In a base holding both Chinese and English, each language is fused on its own and the other
language's best vector hit is weighed against the query language's (``crosslingual``): e5 finds the
passage that answers across languages, but ranks it below same-language noise, and term coverage
is 0 across languages, so neither raw ranks nor the coverage gate may decide there.

A query is cut to ``max_query_chars`` before it is tokenized or embedded: what one search costs
must not grow with what a client sends (the embedder further cuts it to one e5 window).
"""

from __future__ import annotations

from collections.abc import Callable

from ragvigil.config import RetrievalSettings
from ragvigil.knowledge.catalog import Catalog
from ragvigil.knowledge.crosslingual import Script, own_strength, prefer_crosslingual, script_of
from ragvigil.knowledge.embeddings import Embedder, EmbedderBusy, EmbedderUnavailable
from ragvigil.knowledge.lexical import Bm25Index, ChunkRecord
from ragvigil.knowledge.retrieval_mode import RetrievalMode, vector_side_probe
from ragvigil.knowledge.tokenize import Tokenizer
from ragvigil.knowledge.vectorstore import VectorStore, VectorStoreError
from ragvigil.types import Hit, Retrieval

__all__ = ["Hit", "HybridRetriever", "Retrieval", "term_coverage"]  # Hit and Retrieval live in ragvigil.types


def term_coverage(query_tokens: list[str], chunk_tokens: set[str], idf: dict[str, float]) -> float:
    """Share of the query's IDF weight that the chunk contains (0..1)."""
    return _Coverage(query_tokens, idf)(chunk_tokens)


class _Coverage:
    """``term_coverage`` of one query, its weights summed once for all the chunks it is asked about.

    A search asks it about every fused hit (dozens); only the chunk's side is left to compute per hit,
    and a chunk's tokens are checked against the query's few terms rather than made into a set.
    """

    __slots__ = ("total", "weights")

    def __init__(self, query_tokens: list[str], idf: dict[str, float]) -> None:
        self.weights = {t: idf.get(t, 1.0) for t in dict.fromkeys(query_tokens)}
        self.total = sum(self.weights.values())

    def __call__(self, chunk_tokens: set[str] | tuple[str, ...]) -> float:
        if not self.total:
            return 0.0
        weights = self.weights
        if isinstance(chunk_tokens, set | frozenset):
            return sum(w for t, w in weights.items() if t in chunk_tokens) / self.total
        found = weights.keys() & chunk_tokens  # one pass over the chunk's tokens, no set of them kept
        return sum(weights[t] for t in found) / self.total


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
        q_script = script_of(query)
        scripts, present = index.scripts, index.script_set
        other = _other(q_script) if q_script is not None and _other(q_script) in present else None
        vector: list[tuple[ChunkRecord, float]] = []
        if mode == "hybrid" and self.mode.lexical_only:
            result.vector_error = f"retrieval is lexical_only: {self.mode.reason()}"
        elif mode in ("hybrid", "vector") and self.embedder is not None and self.store is not None:
            # a mixed-language base: the other language's hits sit below the own language's noise, so look deeper
            depth = max(n, min(len(index), self.settings.crosslingual_candidates)) if other else n
            try:
                qvec = result.query_vector = self.embedder.embed_query(query, embed_wait_s)
                for chunk_id, score in self.store.search(kb, qvec, depth):
                    pos = index.positions.get(chunk_id)
                    if pos is not None:
                        vector.append((index.records[pos], score))
                self.mode.record_success()
            except EmbedderBusy as exc:
                result.vector_error = str(exc)
            except (VectorStoreError, EmbedderUnavailable) as exc:
                result.vector_error = str(exc)
                self.mode.record_failure(str(exc))

        own_lex, other_lex = _split(lexical, index, scripts, other)
        own_vec, other_vec = _split(vector, index, scripts, other)
        own_vec, other_vec = own_vec[:n], other_vec[:n]
        # floor at 1: in a tiny knowledge base every matched term would otherwise weigh next to nothing
        idf = {t: max(index.idf(t), 1.0) for t in set(tokens)}
        covers = _Coverage(tokens, idf)
        coverage_of: dict[int, float] = {}  # by chunk id: the lexical top's is asked again for its hit

        def coverage(rec: ChunkRecord) -> float:
            found = coverage_of.get(rec.id)
            if found is None:
                found = coverage_of[rec.id] = covers(rec.tokens)
            return found

        own_hits = self._fuse(own_lex, own_vec, coverage)
        other_hits = self._fuse(other_lex, other_vec, coverage)
        for hit in own_hits + other_hits:
            pos = index.positions[hit.chunk_id]
            hit.term_coverage = round(coverage(index.records[pos]), 4)
            hit.language = scripts[pos]
        rs = self.settings
        floor = rs.min_crosslingual_score_zh if q_script == "zh" else rs.min_crosslingual_score
        # only when no document in the query's own language answers it: one that holds enough of the
        # query's words does ("and on mobile? … install the app" must not go to a Chinese login page)
        answered = any(h.term_coverage >= rs.min_term_coverage for h in own_hits)
        crosslingual = not answered and self._prefer_crosslingual(own_hits, other_hits, floor)
        best_other = max((h.vector_score for h in other_hits if h.vector_score is not None), default=None)
        for hit in own_hits:
            hit.relevant = self._relevant(hit)
        for hit in other_hits:
            # a chunk mostly in the other script that holds the query's own words (a bilingual FAQ: "星河会员的
            # 年费是 388 元。 The Galaxy membership costs…") is relevant by the same rule as the query's language
            hit.relevant = self._relevant(hit) or (
                crosslingual
                and hit.vector_score is not None
                and best_other is not None
                and hit.vector_score >= max(floor, best_other - rs.crosslingual_margin)
            )
        ranked = other_hits + own_hits if crosslingual else own_hits + other_hits
        result.hits = ranked[:k]
        return result

    def _fuse(
        self,
        lexical: list[tuple[ChunkRecord, float]],
        vector: list[tuple[ChunkRecord, float]],
        coverage: Callable[[ChunkRecord], float],
    ) -> list[Hit]:
        """Reciprocal rank fusion of one language's BM25 and vector lists, best first.

        The vector side weighs more the less of the query BM25's best hit covers: a paraphrase shares few
        words with the passage that answers it, so BM25's ranking is then mostly noise, while a question
        that repeats a passage's terms keeps BM25's ranking at full weight.
        """
        vector_weight = vector_weights(
            self.settings.vector_weight,
            self.settings.paraphrase_vector_boost,
            coverage(lexical[0][0]) if lexical else None,
        )
        fused: dict[int, Hit] = {}
        for rank, (rec, score) in enumerate(lexical, 1):
            hit = fused.setdefault(rec.id, _hit(rec))
            hit.bm25_score, hit.bm25_rank = score, rank
            hit.score += self.settings.bm25_weight / (self.settings.rrf_k + rank)
        for rank, (rec, score) in enumerate(vector, 1):
            hit = fused.setdefault(rec.id, _hit(rec))
            hit.vector_score, hit.vector_rank = score, rank
            hit.score += vector_weight / (self.settings.rrf_k + rank)
        return sorted(fused.values(), key=lambda h: h.score, reverse=True)

    def _prefer_crosslingual(self, own_hits: list[Hit], other_hits: list[Hit], floor: float) -> bool:
        """Does the other language's best vector hit answer better than anything in the query's own language?"""
        if not other_hits:
            return False
        s = self.settings
        # the own language's nearest hit by cosine, nudged by the query terms it covers: the coverage of
        # any own-language hit would do, but generic words give every English FAQ a share of it
        nearest = max(
            (h for h in own_hits if h.vector_score is not None), key=lambda h: h.vector_score or 0.0, default=None
        )
        own = (
            None
            if nearest is None
            else own_strength(nearest.vector_score, nearest.term_coverage, s.crosslingual_coverage_weight)
        )
        # BM25 and the vector side agreeing on the own language's best document is evidence that it answers
        lexical_top = min(
            (h for h in own_hits if h.bm25_rank is not None), key=lambda h: h.bm25_rank or 0, default=None
        )
        agree = nearest is not None and lexical_top is not None and lexical_top.document_id == nearest.document_id
        offset = s.crosslingual_agreement_offset if agree else s.crosslingual_offset
        other_cos = max((h.vector_score for h in other_hits if h.vector_score is not None), default=None)
        return prefer_crosslingual(own, other_cos, offset, floor)

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


def _split(
    ranked: list[tuple[ChunkRecord, float]], index: Bm25Index, scripts: list[Script | None], other: Script | None
) -> tuple[list[tuple[ChunkRecord, float]], list[tuple[ChunkRecord, float]]]:
    """One ranked list cut, in one pass and keeping its order, into the query language's and the other's."""
    if other is None:
        return list(ranked), []
    own: list[tuple[ChunkRecord, float]] = []
    theirs: list[tuple[ChunkRecord, float]] = []
    positions = index.positions
    for pair in ranked:
        (theirs if scripts[positions[pair[0].id]] == other else own).append(pair)
    return own, theirs


def _other(script: Script) -> Script:
    return "en" if script == "zh" else "zh"


def vector_weights(base: float, boost: float, lexical_top_coverage: float | None) -> float:
    """The vector side's RRF weight: ``base``, raised by ``boost`` times the share of the query BM25's best hit misses."""
    if lexical_top_coverage is None:
        return base
    return base * (1.0 + boost * (1.0 - lexical_top_coverage))
