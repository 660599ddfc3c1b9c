"""``ChromaVectorStore`` against a real ``chroma run``: safe collection names, a dead server is a
``VectorStoreError`` (never a hang or another exception), the same handle works again once the server
is back, and ``vector_store.backend`` alone selects it."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import chromadb
import numpy as np
import pytest

from ragvigil.knowledge.backends import build_vector_store
from ragvigil.knowledge.chroma_store import ChromaVectorStore, collection_name
from ragvigil.knowledge.vectorstore import FaissVectorStore, VectorStoreError
from tests.conftest import make_settings
from tests.realservers import RestartableServer


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


CHROMA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]$")


@pytest.mark.parametrize("kb", ["default", "a..b", "-x", "x.", "a.b", "a_b", "A", "9" * 64])
def test_every_knowledge_base_name_gives_a_valid_distinct_collection(kb: str) -> None:
    name = collection_name("ragvigil_", kb)
    assert CHROMA_NAME.match(name) and ".." not in name
    others = {collection_name("ragvigil_", k) for k in ["default", "a..b", "-x", "x.", "a.b", "a_b", "A", "9" * 64]}
    assert len(others) == 8  # a.b and a_b do not share a collection


def test_invalid_knowledge_base_name_is_refused() -> None:
    with pytest.raises(VectorStoreError):
        collection_name("ragvigil_", "../etc")


def test_collections_are_cosine_without_embedding_function(chroma: RestartableServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    store = ChromaVectorStore(chroma.url, 8, collection_prefix=prefix)
    store.upsert("kb", [1], unit(np.ones((1, 8))))
    client = chromadb.HttpClient(host="127.0.0.1", port=chroma.port)
    col = client.get_collection(collection_name(prefix, "kb"), embedding_function=None)
    assert col.configuration["hnsw"]["space"] == "cosine" and col.configuration["hnsw"]["ef_search"] == 200
    assert col.configuration.get("embedding_function") is None
    assert col.get(ids=["1"])["ids"] == ["1"]  # ids are the chunk ids as strings


def test_dead_server_is_a_vector_store_error_and_the_handle_recovers(chroma: RestartableServer) -> None:
    store = ChromaVectorStore(chroma.url, 8, timeout_s=1.0, collection_prefix=f"t{uuid.uuid4().hex[:8]}_")
    v = unit(np.eye(8))
    store.upsert("kb", [1, 2], v[:2])
    chroma.stop()
    try:
        for call in (
            store.check,
            lambda: store.search("kb", v[0], 2),
            lambda: store.upsert("kb", [3], v[2:3]),
            lambda: store.delete("kb", [1]),
            lambda: store.count("kb"),
            lambda: store.ids("kb"),
        ):
            with pytest.raises(VectorStoreError):
                call()
    finally:
        chroma.start()
    store.check()
    assert store.ids("kb") == {1, 2}  # the server kept what it had acknowledged
    store.upsert("kb", [3], v[2:3])
    assert store.search("kb", v[2], 1)[0][0] == 3


def test_a_server_that_never_ran_is_a_vector_store_error() -> None:
    from tests.realservers import free_port

    store = ChromaVectorStore(f"http://127.0.0.1:{free_port()}", 8, timeout_s=0.5)
    with pytest.raises(VectorStoreError):
        store.check()
    with pytest.raises(VectorStoreError):
        store.search("kb", unit(np.ones(8)), 3)


def test_backend_is_chosen_by_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(build_vector_store(make_settings(tmp_path), 8), FaissVectorStore)
    monkeypatch.setenv("RAGVIGIL_VECTOR_STORE__BACKEND", "chroma")
    monkeypatch.setenv("RAGVIGIL_VECTOR_STORE__URL", "http://127.0.0.1:8123")
    monkeypatch.setenv("RAGVIGIL_VECTOR_STORE__BATCH", "64")
    store = build_vector_store(make_settings(tmp_path), 8)
    assert isinstance(store, ChromaVectorStore)
    assert (store.url, store.batch, store.dim) == ("http://127.0.0.1:8123", 64, 8)


def test_a_url_that_is_not_http_is_a_settings_error(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"vector_store\.url"):
        make_settings(tmp_path, vector_store={"backend": "chroma", "url": "localhost:8000"})


def test_documents_replaced_or_deleted_while_chroma_is_down(chroma: RestartableServer, tmp_path: Path) -> None:
    """The database change stands (a 2xx for the upload); the vectors left behind are deleted by the resync."""
    from sqlalchemy import select

    from ragvigil.app import Runtime
    from ragvigil.storage.models import Chunk

    prefix = f"t{uuid.uuid4().hex[:8]}_"
    settings = make_settings(
        tmp_path,
        vector_store={"backend": "chroma", "url": chroma.url, "timeout_s": 1, "collection_prefix": prefix},
        retrieval={"sentence_vectors_per_chunk": 0},
    )
    rt = Runtime(settings)
    try:
        rt.ingestor.ingest_bytes("default", "a.md", b"# A\n\nThe first version of document a.\n")
        gone = rt.ingestor.ingest_bytes("default", "b.md", b"# B\n\nDocument b is deleted later.\n")
        rt.filler.drain()
        old_ids = rt.vectors.ids("default")
        assert len(old_ids) == 2
        chroma.stop()
        try:
            replaced = rt.ingestor.ingest_bytes("default", "a.md", b"# A\n\nThe second version of document a.\n")
            assert replaced.outcome != "failed"
            rt.ingestor.delete_document("default", gone.document_id)
            assert rt.retriever.search("default", "second version", mode="bm25").hits[0].title == "A"
        finally:
            chroma.start()
        assert rt.vectors.ids("default") == old_ids  # still there: the server missed both deletes
        rt.filler.requeue()
        rt.filler.drain()
        with rt.db.session() as s:
            in_db = set(s.scalars(select(Chunk.id)))
        assert rt.vectors.ids("default") == in_db and not (in_db & old_ids)
    finally:
        rt.close()


def test_doctor_checks_the_chroma_server_and_each_collection(chroma: RestartableServer, tmp_path: Path) -> None:
    """`ragvigil doctor` on the chroma backend: the heartbeat, each base's vectors against its embedded chunks
    (a drift is a warning), and a server that does not answer named as a failure."""
    from ragvigil.app import Runtime
    from ragvigil.ops.doctor import run_checks

    prefix = f"t{uuid.uuid4().hex[:8]}_"
    settings = make_settings(
        tmp_path,
        vector_store={"backend": "chroma", "url": chroma.url, "timeout_s": 2, "collection_prefix": prefix},
        retrieval={"sentence_vectors_per_chunk": 0},
    )
    rt = Runtime(settings)
    try:
        rt.ingestor.ingest_bytes("default", "a.md", b"# A\n\nDocument a is embedded.\n")
        rt.filler.drain()
        rows = {r.check: r for r in run_checks(settings)}
        assert rows["vector_store"].status == "ok" and "answers" in rows["vector_store"].found
        assert rows["vector_store.index[default]"].status == "ok", rows["vector_store.index[default]"]
        rt.vectors.delete("default", sorted(rt.vectors.ids("default")))  # vectors lost behind the database's back
        drift = {r.check: r for r in run_checks(settings)}["vector_store.index[default]"]
        assert drift.status == "warn" and drift.found.startswith("0 vectors, 1 chunks")
        chroma.stop()
        try:
            down = {r.check: r for r in run_checks(settings, timeout_s=3)}["vector_store"]
            assert down.status == "fail" and "does not answer" in down.found
        finally:
            chroma.start()
    finally:
        rt.close()
