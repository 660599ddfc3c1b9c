"""The ``VectorStore`` contract, the same assertions over every backend: faiss (flat, hnsw) and a real Chroma server.

Retrieval, the filler and the resync only rely on what is asserted here, so a backend passing it can be
selected by configuration alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ragvigil.knowledge.vectorstore import FaissVectorStore, VectorStore

DIM = 16


@pytest.fixture(params=["faiss-flat", "faiss-hnsw", "chroma"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], VectorStore]:
    """A factory: calling it twice gives two handles on the same stored vectors (a reopen, another replica)."""
    if request.param == "chroma":
        from ragvigil.knowledge.chroma_store import ChromaVectorStore

        server = request.getfixturevalue("chroma")
        prefix = f"t{uuid.uuid4().hex[:8]}_"  # tests share the server, never a collection
        return lambda: ChromaVectorStore(server.url, DIM, timeout_s=5.0, batch=3, collection_prefix=prefix)
    kind = request.param.split("-")[1]
    return lambda: FaissVectorStore(tmp_path, DIM, kind)  # type: ignore[arg-type]


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return unit(np.random.default_rng(seed).normal(size=(n, DIM)))


def test_upsert_search_ids_count(make_store: Callable[[], VectorStore]) -> None:
    store = make_store()
    assert store.count("kb") == 0 and store.ids("kb") == set() and store.search("kb", vectors(1)[0], 5) == []
    v = vectors(10)
    store.upsert("kb", list(range(100, 110)), v)  # more than one batch on chroma (batch=3)
    assert store.count("kb") == 10
    assert store.ids("kb") == set(range(100, 110))
    hits = store.search("kb", v[4], 3)
    assert len(hits) == 3
    assert hits[0][0] == 104
    assert hits[0][1] == pytest.approx(1.0, abs=1e-4)  # a cosine similarity, as faiss's inner product
    expected = sorted((float(v[4] @ v[i]) for i in range(10)), reverse=True)[:3]
    assert [s for _, s in hits] == pytest.approx(expected, abs=1e-3)
    assert store.search("kb", v[4], 50)[-1][0] in set(range(100, 110))  # k past the count: all of them
    assert len(store.search("kb", v[4], 50)) == 10


def test_replace_keeps_one_vector_per_id(make_store: Callable[[], VectorStore]) -> None:
    store = make_store()
    v = vectors(4, seed=1)
    store.upsert("kb", [1, 2, 3, 4], v)
    store.upsert("kb", [2], v[0:1])  # id 2 now carries id 1's vector
    assert store.count("kb") == 4
    hits = dict(store.search("kb", v[0], 4))
    assert hits[1] == pytest.approx(1.0, abs=1e-4) and hits[2] == pytest.approx(1.0, abs=1e-4)
    assert store.search("kb", v[1], 1)[0][0] != 2  # its old vector is gone


def test_delete_and_knowledge_bases_apart(make_store: Callable[[], VectorStore]) -> None:
    store = make_store()
    v = vectors(6, seed=2)
    store.upsert("a", [1, 2, 3], v[:3])
    store.upsert("b.x", [1, 2, 3], v[3:])
    store.delete("a", [2, 99])  # an id that is not there is no error
    store.delete("a", [])
    assert store.ids("a") == {1, 3}
    assert store.count("a") == 2
    assert 2 not in {i for i, _ in store.search("a", v[1], 5)}
    assert store.ids("b.x") == {1, 2, 3}  # another knowledge base is untouched
    assert store.search("b.x", v[4], 1)[0][0] == 2


def test_flushed_writes_are_seen_by_a_second_handle(make_store: Callable[[], VectorStore]) -> None:
    first = make_store()
    v = vectors(3, seed=3)
    first.upsert("kb", [7, 8, 9], v)
    first.flush()
    second = make_store()
    assert second.ids("kb") == {7, 8, 9}
    assert second.search("kb", v[2], 1)[0][0] == 9
    second.check()


def test_drop_empties_the_knowledge_base(make_store: Callable[[], VectorStore]) -> None:
    store = make_store()
    store.upsert("kb", [1, 2], vectors(2, seed=4))
    store.flush()
    store.drop("kb")  # type: ignore[attr-defined]
    assert store.count("kb") == 0
    assert store.ids("kb") == set()
