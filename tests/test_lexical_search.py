"""Bm25Index.search: the scores bm25s's own get_scores gives, bit for bit, and a pinned order for ties.

The pruned search (MaxScore over the query terms' posting lists) and the dense one (every chunk scored)
must both return exactly what ranking ``get_scores`` by score descending, then position ascending, gives.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest

from ragvigil.knowledge import lexical
from ragvigil.knowledge.lexical import Bm25Index, ChunkRecord


@pytest.fixture(autouse=True)
def always_prune(monkeypatch: pytest.MonkeyPatch) -> None:
    """An index built with ``dense_below=0`` prunes every query, however common its terms (in production a
    query over lists longer than the base, or with common essential terms, is scored densely)."""
    monkeypatch.setattr(lexical, "DENSE_POSTINGS", float("inf"))
    monkeypatch.setattr(lexical, "_DENSE_SHARE", 0)


def record(i: int, tokens: tuple[str, ...], text: str = "text") -> ChunkRecord:
    return ChunkRecord(i + 1, f"d{i // 3}", "title", "source.md", "", text, tokens)


def random_corpus(rng: random.Random, n: int, vocab: int) -> list[ChunkRecord]:
    """Zipf-ish tokens with repeats inside chunks, whole chunks repeated (ties) and a few empty chunks."""
    words = [f"w{i}" for i in range(vocab)]
    weights = [1.0 / (i + 3) for i in range(vocab)]
    out: list[tuple[str, ...]] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.03:
            out.append(())
        elif r < 0.25 and out:
            out.append(out[rng.randrange(len(out))])  # the same tokens again: every score ties
        else:
            out.append(tuple(rng.choices(words, weights, k=rng.randint(1, 40))))
    return [record(i, t) for i, t in enumerate(out)]


def expected(index: Bm25Index, tokens: list[str], k: int) -> list[tuple[int, float]]:
    """bm25s's own scores, ranked score descending then position ascending, positive ones only."""
    assert index._bm25 is not None
    known = [t for t in tokens if t in index._bm25.vocab_dict and t != ""]
    if not known:
        return []
    scores = index._bm25.get_scores(known)
    order = np.lexsort((np.arange(len(scores)), -scores))[:k]
    return [(index.records[i].id, float(scores[i])) for i in order if scores[i] > 0]


def got(index: Bm25Index, tokens: list[str], k: int) -> list[tuple[int, float]]:
    return [(r.id, s) for r, s in index.search(tokens, k)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pruned_and_dense_search_give_bm25s_scores_bit_for_bit(seed: int) -> None:
    rng = random.Random(seed)
    records = random_corpus(rng, 3000, 400)
    pruned, dense = Bm25Index(records, dense_below=0), Bm25Index(records, dense_below=10**9)
    assert not pruned._dense and dense._dense
    vocab = [f"w{i}" for i in range(400)]
    for _ in range(300):
        query = rng.choices(vocab, k=rng.randint(1, 8))  # common and rare terms, some repeated
        if rng.random() < 0.3:
            query.insert(rng.randrange(len(query) + 1), "never-indexed")
        if rng.random() < 0.3:
            query.append(query[0])  # a duplicate query token counts twice, as bm25s counts it
        k = rng.choice([1, 3, 10, 30, 200, 5000])
        want = expected(pruned, query, k)
        assert got(pruned, query, k) == want, query
        assert got(dense, query, k) == want, query


def test_bm25s_counts_a_repeated_query_token_each_time() -> None:
    """What the search matches: get_scores adds a term's column once per occurrence in the query."""
    index = Bm25Index([record(0, ("a", "b")), record(1, ("b", "c")), record(2, ("c",))], dense_below=0)
    assert index._bm25 is not None
    once, twice = index._bm25.get_scores(["a"]), index._bm25.get_scores(["a", "a"])
    assert twice[0] == np.float32(once[0]) + np.float32(once[0]) and twice[0] > once[0]
    assert got(index, ["a", "a"], 3) == [(1, float(twice[0]))]
    assert got(index, ["a", "b", "a"], 3)[0][1] == float(index._bm25.get_scores(["a", "b", "a"])[0])


def test_ties_rank_by_position_ascending() -> None:
    """Chunks with equal scores come in the view's order (chunk id order), in both search paths."""
    tokens = ("alpha", "beta")
    records = [record(i, tokens if i % 2 == 0 else ("gamma",)) for i in range(40)]
    for below in (0, 10**9):
        index = Bm25Index(records, dense_below=below)
        hits = index.search(["alpha"], 5)
        assert [r.id for r, _ in hits] == [1, 3, 5, 7, 9]
        assert len({s for _, s in hits}) == 1
        # the one-token chunks of gamma score higher (shorter), each group in id order
        ids = [r.id for r, _ in index.search(["beta", "gamma"], 30)]
        assert ids == list(range(2, 41, 2)) + list(range(1, 20, 2))


def test_unknown_empty_and_absent_queries_find_nothing() -> None:
    index = Bm25Index([record(0, ("a",)), record(1, ())], dense_below=0)
    assert index.search([], 5) == []
    assert index.search(["zzz"], 5) == []
    assert index.search(["", "zzz"], 5) == []
    assert index.search(["a"], 0) == []
    assert Bm25Index([]).search(["a"], 5) == []


def test_idf_comes_from_the_posting_lists_as_the_document_frequency_did() -> None:
    rng = random.Random(7)
    records = random_corpus(rng, 500, 60)
    index = Bm25Index(records)
    df: Counter[str] = Counter()
    for r in records:
        df.update(set(r.tokens))
    n = len(records)
    for token in [f"w{i}" for i in range(60)] + ["never-indexed", "\x00", ""]:
        d = df.get(token, 0)
        assert index.df(token) == d
        assert index.idf(token) == math.log(1 + (n - d + 0.5) / (d + 0.5))


@pytest.mark.parametrize("share", [0, 4])
def test_a_large_base_prunes_and_still_matches(share: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Enough chunks that common terms become non-essential and the candidate lists are cut."""
    monkeypatch.setattr(lexical, "_DENSE_SHARE", share)  # 4: the production fallback for common essential terms
    rng = random.Random(11)
    records = random_corpus(rng, 30_000, 2000)
    index = Bm25Index(records, dense_below=0)
    vocab = [f"w{i}" for i in range(2000)]
    for _ in range(60):
        query = [rng.choice(vocab[:20]), rng.choice(vocab[:200]), rng.choice(vocab)]
        assert got(index, query, 30) == expected(index, query, 30), query
