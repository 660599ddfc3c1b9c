"""BM25 over one knowledge base's chunks, kept in memory and rebuilt from stored tokens.

bm25s has no incremental add, but rebuilding from pre-tokenized chunks is fast (tokens
are stored with each chunk, so a rebuild never re-runs jieba). The script of each chunk is worked
out here too, with the rest of the build (in the background for a large base): computed on the first
query after a rebuild instead, it held that query for minutes at 1M chunks.

Search reads bm25s's own index, a CSC matrix of per-(chunk, term) scores, but not through
``get_scores``, which scores every chunk: at 1M chunks that and the top-k over a million scores cost
~10 ms a query. ``Bm25Index.search`` scores only chunks that hold a query term, and of those only the ones
that can still reach the top k (MaxScore): each term's largest contribution bounds what a chunk can gain
from it, so once k real scores are known, a chunk made only of low-bound (common) terms is never scored.
The scores it returns are bm25s's, bit for bit: each contribution is the float32 stored in the matrix and
a chunk's score is their float32 sum in the query's order, a repeated query token counted each time, as
``get_scores`` adds them. Ties are ordered by position (the chunk's order in the view, i.e. by chunk id):
score descending, then position ascending.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
from dataclasses import dataclass
from typing import Any

import bm25s
import numpy as np

from ragvigil.knowledge.crosslingual import Script, script_of

_EMPTY = "\x00"  # bm25s cannot index an empty token list
# Below this many chunks every query scores all of them (one float32 array, as get_scores does, then the
# top k of it), and so does a query whose terms' posting lists hold more than DENSE_POSTINGS times as many
# entries as there are chunks: pruning gains nothing there. Measured on 2 cores with the synthetic corpus of
# bench/retrieval.py (p50 / p95 ms): 100k chunks dense 0.15 / 0.25, pruned 0.31 / 0.67; 500k dense
# 0.78 / 1.42, pruned 0.91 / 2.23; 1M (that corpus's index repeated) get_scores 2.22 / 3.81, dense 1.79 /
# 3.45, pruned with the dense fallback 1.59 / 3.28.
DENSE_BELOW = 500_000
DENSE_POSTINGS = 0.5
# Chunks whose exact score is computed for a threshold to prune with (see Bm25Index._pruned).
_SEED = 512
# A term is looked up for more than 1/_SPREAD of its chunks by writing its column into an array by position
# (its length, sequential) rather than by binary search (one search per chunk looked up).
_SPREAD = 8
# Essential terms holding more postings than 1/_DENSE_SHARE of the chunks: nothing to gain, score densely.
_DENSE_SHARE = 4
# bm25s's build leaves its per-chunk lists freed but held by the C heap (154 MB of them at 100k chunks, more
# than the index): from this size they are handed back to the system once the index is built.
_TRIM_FROM = 10_000
# A float32 sum of m positive terms exceeds their exact sum by less than m units in the last place; a
# bound widened by this much per term stays above the float32 score bm25s computes.
_ULP = 2.0**-23


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

    def __init__(self, records: list[ChunkRecord], dense_below: int = DENSE_BELOW) -> None:
        self.records = records
        self.positions = {r.id: i for i, r in enumerate(records)}
        self._bm25: bm25s.BM25 | None = None
        # by position: the retriever ranks a mixed-language base's two languages apart
        self.scripts: list[Script | None] = [script_of(r.text) for r in records]
        self.script_set: frozenset[Script | None] = frozenset(self.scripts)
        self._vocab: dict[str, int] = {}
        self._dense = len(records) < dense_below
        if not records:
            return
        bm = bm25s.BM25()
        # the records' own tuples, no list copy of every chunk's tokens
        bm.index([r.tokens or (_EMPTY,) for r in records], show_progress=False)
        bm.unique_token_ids_set = None  # a set of every term id, read only by retrieve (never called here)
        self._bm25 = bm
        self._vocab = bm.vocab_dict
        scores = bm.scores
        self._data: np.ndarray = scores["data"]  # float32 contribution of each (chunk, term), column by column
        self._rows: np.ndarray = scores["indices"]  # the chunk of each, ascending within a term's column
        self._indptr: np.ndarray = scores["indptr"]  # term t's postings are [indptr[t], indptr[t + 1])
        self._n_terms = len(self._indptr) - 1  # "" is in the vocabulary but has no column
        df = np.diff(self._indptr)  # a term's document frequency is the length of its posting list
        # each term's largest contribution to any chunk's score: the bound MaxScore prunes with
        top = np.zeros(self._n_terms, dtype=np.float32)
        held = df > 0
        if held.any():
            top[held] = np.maximum.reduceat(self._data, self._indptr[:-1][held])
        self._max = top
        if self._data.size and float(self._data.min()) < 0:
            self._dense = True  # bounds assume contributions that only add (bm25s's lucene scores do)
        if len(records) >= _TRIM_FROM:
            _release_free_heap()

    def __len__(self) -> int:
        return len(self.records)

    def df(self, token: str) -> int:
        """How many chunks hold ``token`` (the length of its posting list)."""
        t = self._vocab.get(token)
        if t is None or t >= self._n_terms or token == _EMPTY:
            return 0
        return int(self._indptr[t + 1] - self._indptr[t])

    def idf(self, token: str) -> float:
        """BM25's inverse document frequency of ``token`` in this knowledge base."""
        n, df = len(self.records), self.df(token)
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    def term_ids(self, tokens: list[str]) -> list[int]:
        """The query's terms as bm25s's ids, in order and repeated as given; unknown tokens left out."""
        vocab, n = self._vocab, self._n_terms
        return [t for t in (vocab.get(tok) for tok in tokens) if t is not None and t < n]

    def search(self, tokens: list[str], k: int) -> list[tuple[ChunkRecord, float]]:
        """Top-k chunks with a positive score, best first; ties by position (chunk id) ascending."""
        if self._bm25 is None or not tokens or k <= 0:
            return []
        ids = self.term_ids(tokens)
        if not ids:
            return []
        indptr = self._indptr
        postings = sum(int(indptr[t + 1] - indptr[t]) for t in set(ids))
        if self._dense or postings >= len(self.records) * DENSE_POSTINGS:
            pos, sc = _top_dense(self._dense_scores(ids), k)
        else:
            pos, sc = self._pruned(ids, k)
        records = self.records
        return [(records[i], float(s)) for i, s in zip(pos.tolist(), sc.tolist(), strict=True) if s > 0]

    # -- scoring --------------------------------------------------------------------------------------------

    def _postings(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self._indptr[t], self._indptr[t + 1]
        return self._rows[a:b], self._data[a:b]

    def _dense_scores(self, ids: list[int]) -> np.ndarray:
        """All chunks' scores, each term's column added in query order (a chunk appears once per column)."""
        scores = np.zeros(len(self.records), dtype=np.float32)
        for t in ids:
            rows, data = self._postings(t)
            np.add.at(scores, rows, data)  # one pass (numpy >= 1.25), where scores[rows] += data takes three
        return scores

    def _lookup(self, t: int, cand: np.ndarray, scratch: list[np.ndarray]) -> np.ndarray:
        """Term ``t``'s float32 contribution to each chunk of ``cand`` (0 where the chunk lacks it)."""
        rows, data = self._postings(t)
        if not len(rows):
            return np.zeros(len(cand), dtype=np.float32)
        if len(cand) * _SPREAD > len(rows):  # many chunks: spread the column out by position and read it there
            if not scratch:
                scratch.append(np.zeros(len(self.records), dtype=np.float32))
            dense = scratch[0]
            dense[rows] = data
            out = dense[cand]
            dense[rows] = 0
            return out
        at = np.searchsorted(rows, cand)
        np.minimum(at, len(rows) - 1, out=at)
        return np.where(rows[at] == cand, data[at], np.float32(0))

    def _exact(self, cand: np.ndarray, ids: list[int], scratch: list[np.ndarray]) -> np.ndarray:
        """The float32 scores of the chunks ``cand``, summed as bm25s sums them: in query order."""
        contrib = {t: self._lookup(t, cand, scratch) for t in dict.fromkeys(ids)}
        scores = np.zeros(len(cand), dtype=np.float32)
        for t in ids:
            scores += contrib[t]  # + 0.0 where a chunk lacks the term leaves its sum as it was
        return scores

    def _pruned(self, ids: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (positions, scores) over the query terms' posting lists only (MaxScore).

        A threshold ``theta`` that the k-th best score reaches is taken from real scores of likely chunks;
        the weakest terms, whose bounds together stay below it, are non-essential: a chunk holding none of
        the others cannot reach it. The chunks holding an essential term are then bounded by what they hold
        plus the bounds of the weak terms not yet looked at, and dropped, term by term, as their bound falls
        below ``theta``. Every bound is widened to stay above bm25s's float32 sum, so no chunk that belongs
        in the top k (a tie with the k-th included) is dropped; the survivors are scored exactly.
        """
        uniq = list(dict.fromkeys(ids))
        mult = dict.fromkeys(uniq, 0)
        for t in ids:
            mult[t] += 1
        # each term's bound: its largest contribution, as often as the query repeats it
        bound = {t: float(self._max[t]) * mult[t] for t in uniq}
        widen = 1.0 + (len(ids) + 2) * _ULP
        indptr = self._indptr
        df = {t: int(indptr[t + 1] - indptr[t]) for t in uniq}
        scratch: list[np.ndarray] = []

        # 1. a first threshold: the real scores of the rarest term's chunks (those it favours most when it
        # has many), which the best chunks mostly hold
        rows, data = self._postings(min(uniq, key=df.__getitem__))
        seed = rows if len(rows) <= _SEED else np.sort(rows[np.argpartition(-data, _SEED - 1)[:_SEED]])
        theta = _kth(self._exact(seed, ids, scratch), k)

        # 2. the essential terms
        weak: list[int] = []
        weak_sum, essential = 0.0, []
        for t in sorted(uniq, key=bound.__getitem__):
            if essential or (weak_sum + bound[t]) * widen >= theta:
                essential.append(t)
            else:
                weak.append(t)
                weak_sum += bound[t]
        # 3. the chunks holding an essential term, with what those contribute (float64: a bound, not a score)
        rest = weak_sum
        floor = theta / widen - rest  # what the essential terms must give a chunk for it to stay
        held = sum(df[t] for t in essential)
        if held * _DENSE_SHARE >= len(self.records):
            return _top_dense(self._dense_scores(ids), k)  # common terms all matter: no pruning to gain
        if len(essential) == 1:
            rows, data = self._postings(essential[0])
            cand, partial = rows, data.astype(np.float64) * mult[essential[0]]
        elif held * 32 >= len(self.records):  # long lists: add them up by position, no sort of their union
            acc = np.zeros(len(self.records), dtype=np.float64)
            for t in essential:
                rows, data = self._postings(t)
                np.add.at(acc, rows, data.astype(np.float64) * mult[t])
            cand = np.flatnonzero(acc >= max(floor, np.finfo(np.float64).tiny))
            partial = acc[cand]
        else:
            parts = [self._postings(t) for t in essential]
            rows = np.concatenate([p[0] for p in parts])
            data = np.concatenate([p[1].astype(np.float64) * mult[t] for p, t in zip(parts, essential, strict=True)])
            order = np.argsort(rows, kind="stable")
            rows, data = rows[order], data[order]
            first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
            cand, partial = rows[first], np.add.reduceat(data, first)
        keep = partial >= floor
        cand, partial = cand[keep], partial[keep]
        if len(cand) > 4 * _SEED:  # a better threshold: the real scores of the chunks bounded highest
            best = np.sort(np.argpartition(-partial, _SEED - 1)[:_SEED])
            theta = max(theta, _kth(self._exact(cand[best], ids, scratch), k))

        # 4. the weak terms, strongest first: each one looked up for the chunks left, then those whose
        # bound fell below theta dropped
        for t in reversed(weak):
            keep = (partial + rest) * widen >= theta
            cand, partial = cand[keep], partial[keep]
            if not len(cand):
                break
            rest -= bound[t]
            partial += self._lookup(t, cand, scratch).astype(np.float64) * mult[t]
        cand = cand[(partial + max(rest, 0.0)) * widen >= theta]
        return _top_k(cand, self._exact(cand, ids, scratch), k)


@functools.cache
def _malloc_trim() -> Any:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None  # glibc only
    except (OSError, AttributeError):
        return None


def _release_free_heap() -> None:
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _kth(scores: np.ndarray, k: int) -> float:
    """The k-th best of ``scores`` (0 when there are fewer): a score the k-th best chunk reaches at least."""
    return float(-np.partition(-scores, k - 1)[k - 1]) if len(scores) >= k else 0.0


def _top_dense(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``_top_k`` over every chunk's score (by position), chunks without a positive score left out."""
    kth = -np.partition(-scores, k - 1)[k - 1] if len(scores) > k else 0  # selecting the k-th largest of the
    # negated scores: introselect for the (n - k)-th of a mostly zero array took up to 5 ms at 100k chunks
    pos = np.flatnonzero(scores >= kth) if kth > 0 else np.flatnonzero(scores)
    return _top_k(pos, scores[pos], k)


def _top_k(pos: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (positions, scores): score descending, then position ascending."""
    if len(scores) > k:
        kth = -np.partition(-scores, k - 1)[k - 1]
        keep = np.flatnonzero(scores >= kth)  # more than k when the k-th score is tied
        pos, scores = pos[keep], scores[keep]
    order = np.lexsort((pos, -scores))[:k]
    return pos[order], scores[order]
