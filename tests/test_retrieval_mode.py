"""Vector store or embedder down: BM25 alone (degraded), back to hybrid by itself, missed vectors filled in.

The faults go through the one fault mechanism the fault API and the drills use (``rt.faults`` and the
seams of ``ops/faults/hooks.py``): the real store and embedder, failing with their own error types.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.chat.pipeline import Turn
from ragvigil.knowledge.vectorstore import VectorStoreError
from ragvigil.ops.metrics import REGISTRY
from tests.conftest import admin_key, local_client, make_settings
from tests.realservers import wait_until

QUESTION = "How do I export my notes to PDF?"
_n = itertools.count()


@pytest.fixture
def rt(sample_data_dir: Path, tmp_path: Path) -> Iterator[Runtime]:
    """A private copy of the sample instance with fault injection on."""
    d = tmp_path / "data"
    shutil.copytree(sample_data_dir, d)
    runtime = Runtime(make_settings(d, faults={"enabled": True}))
    yield runtime
    runtime.close()


def _break(rt: Runtime, target: str) -> str:
    return rt.faults.inject(target, "error", 120, by="test").id


def _hits(target: str) -> float:
    return REGISTRY.get_sample_value("ragvigil_fault_hits_total", {"target": target}) or 0.0


def _mode_gauge(mode: str) -> float | None:
    return REGISTRY.get_sample_value("ragvigil_retrieval_mode", {"mode": mode})


def _trip(rt: Runtime) -> None:
    for _ in range(rt.settings.retrieval_mode.trip_after):
        result = rt.retriever.search("default", f"{QUESTION} {next(_n)}")
        assert result.vector_error and "injected fault" in result.vector_error
        assert result.hits  # BM25 answered alone


def test_vector_store_failures_switch_to_lexical_only_and_a_probe_switches_back(rt: Runtime) -> None:
    assert rt.retriever.search("default", QUESTION).vector_error is None
    assert rt.retriever.mode.state()["mode"] == "hybrid" and _mode_gauge("lexical_only") == 0
    fault = _break(rt, "vector_store")
    _trip(rt)
    state = rt.retriever.mode.state()
    assert state["mode"] == "lexical_only" and state["forced"] is False and "injected fault" in state["reason"]
    assert _mode_gauge("lexical_only") == 1 and _mode_gauge("hybrid") == 0
    searched = _hits("vector_store")
    # tripped: turns no longer pay for the failing store, and say they are degraded
    turn = rt.pipeline.run(Turn(message=QUESTION, kb="default"))
    assert _hits("vector_store") == searched  # the store was not called
    assert turn.degraded and any("lexical_only" in r for r in turn.degraded_reasons)
    assert turn.sources  # still answered from BM25
    assert rt.retriever.mode.probe_once() is False  # the store still fails its probe
    rt.faults.clear(fault)
    assert rt.retriever.mode.probe_once() is True
    assert rt.retriever.mode.state()["mode"] == "hybrid" and _mode_gauge("hybrid") == 1
    back = rt.retriever.search("default", QUESTION)
    assert back.vector_error is None and any(h.vector_rank is not None for h in back.hits)


def test_an_embedding_outage_trips_too_and_a_busy_engine_does_not(rt: Runtime) -> None:
    busy = rt.faults.inject("embedding", "timeout", 120, {"delay_s": 0.05}, by="test").id
    for i in range(rt.settings.retrieval_mode.trip_after + 1):  # no engine in time: a queue, not an outage
        assert "timed out" in (rt.retriever.search("default", f"busy question {i}").vector_error or "")
    assert rt.retriever.mode.state()["mode"] == "hybrid"
    rt.faults.clear(busy)
    fault = _break(rt, "embedding")
    for i in range(rt.settings.retrieval_mode.trip_after - 1):
        assert "embedding failing" in (rt.retriever.search("default", f"unseen question {i}").vector_error or "")
    assert rt.retriever.mode.state()["mode"] == "hybrid"  # not yet: one more in a row
    rt.retriever.search("default", "unseen question last")
    assert rt.retriever.mode.state()["mode"] == "lexical_only"
    rt.faults.clear(fault)
    assert rt.retriever.mode.probe_once() is True


def test_chunks_ingested_during_the_outage_get_their_vectors_once_the_store_is_back(rt: Runtime) -> None:
    fault = _break(rt, "vector_store")
    _trip(rt)
    res = rt.ingestor.ingest_bytes("default", "outage/zebra.md", b"# Zebra care\nZebras need a quiet paddock.")
    try:
        rt.filler.run_once()
        raise AssertionError("the filler should have failed against the down store")
    except VectorStoreError:
        pass
    assert rt.ingestor.document("default", res.document_id).vector_status == "pending"
    bm25 = rt.retriever.search("default", "zebra paddock")
    assert bm25.hits[0].document_id == res.document_id  # searchable by BM25 meanwhile
    rt.faults.clear(fault)
    assert rt.retriever.mode.probe_once() is True  # back to hybrid: requeued
    rt.filler.drain()
    assert rt.ingestor.document("default", res.document_id).vector_status == "ready"
    vector = rt.retriever.search("default", "zebra paddock", mode="vector")
    assert vector.vector_error is None and vector.hits[0].document_id == res.document_id


def test_vectors_the_store_took_in_memory_but_never_persisted_are_requeued(rt: Runtime) -> None:
    """A flush that fails leaves chunks marked embedded that the on-disk index lacks: the requeue finds them."""
    res = rt.ingestor.ingest_bytes("default", "outage/otter.md", b"# Otters\nOtters hold hands while sleeping.")
    rt.filler.run_once()
    fault = _break(rt, "vector_store")
    try:
        rt.vectors.flush()
        raise AssertionError("flush should have failed")
    except VectorStoreError:
        pass
    rt.vectors.inner._indexes.clear()  # what a restart sees: only the index on disk
    rt.faults.clear(fault)
    assert rt.filler.requeue() >= 1
    assert rt.ingestor.document("default", res.document_id).vector_status == "pending"
    rt.filler.drain()
    assert rt.ingestor.document("default", res.document_id).vector_status == "ready"
    assert rt.retriever.search("default", "otters sleeping", mode="vector").hits[0].document_id == res.document_id


def test_the_background_probe_restores_hybrid_by_itself_and_health_shows_the_mode(rt: Runtime) -> None:
    client = local_client(create_app(runtime=rt), admin_key(rt))
    assert client.get("/health").json()["checks"]["vector_store"]["details"]["retrieval_mode"]["mode"] == "hybrid"
    rt.settings.retrieval_mode.probe_interval_s = 0.1
    rt.retriever.mode.start()
    fault = _break(rt, "vector_store")
    _trip(rt)
    details = client.get("/health").json()["checks"]["vector_store"]["details"]["retrieval_mode"]
    assert details["mode"] == "lexical_only" and "injected fault" in details["reason"]
    rt.faults.clear(fault)
    wait_until(lambda: rt.retriever.mode.state()["mode"] == "hybrid", 20, "the probe to restore hybrid")
    assert client.get("/health").json()["checks"]["vector_store"]["details"]["retrieval_mode"]["mode"] == "hybrid"


def test_a_forced_lexical_mode_stays_until_restored(sample_runtime: Runtime) -> None:
    mode = sample_runtime.retriever.mode
    assert "lexical_only (forced)" in mode.force_lexical("drill", by="key:ops")
    assert mode.probe_once() is False  # the store answers, but an operator said so
    assert sample_runtime.retriever.search("default", QUESTION).vector_error.startswith("retrieval is lexical_only")
    assert mode.state() | {"since": None} == {
        "mode": "lexical_only",
        "forced": True,
        "reason": "drill",
        "since": None,
        "by": "key:ops",
        "failures_in_a_row": 0,
    }
    assert "now hybrid" in mode.restore(by="key:ops")
    assert mode.state()["mode"] == "hybrid" and mode.state()["forced"] is False
