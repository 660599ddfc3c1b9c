"""Vector store or embedder down: BM25 alone (degraded), back to hybrid by itself, missed vectors filled in.

The faults are real failures of the real store and embedder, raised through their fault points.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable

from fastapi.testclient import TestClient

from ragvigil.app import Runtime
from ragvigil.chat.pipeline import Turn
from ragvigil.knowledge.vectorstore import VectorStoreError
from ragvigil.ops.metrics import REGISTRY
from tests.realservers import wait_until

QUESTION = "How do I export my notes to PDF?"
_n = itertools.count()


def _outage(calls: Counter) -> Callable[[str], str]:
    def hook(op: str) -> str:
        calls[op] += 1
        return "injected outage"

    return hook


def _mode_gauge(mode: str) -> float | None:
    return REGISTRY.get_sample_value("ragvigil_retrieval_mode", {"mode": mode})


def _trip(rt: Runtime) -> None:
    for _ in range(rt.settings.retrieval_mode.trip_after):
        result = rt.retriever.search("default", f"{QUESTION} {next(_n)}")
        assert result.vector_error and "failed" in result.vector_error
        assert result.hits  # BM25 answered alone


def test_vector_store_failures_switch_to_lexical_only_and_a_probe_switches_back(sample_runtime: Runtime) -> None:
    rt = sample_runtime
    assert rt.retriever.search("default", QUESTION).vector_error is None
    assert rt.retriever.mode.state()["mode"] == "hybrid" and _mode_gauge("lexical_only") == 0
    calls: Counter = Counter()
    rt.vectors.fault.hook = _outage(calls)
    _trip(rt)
    state = rt.retriever.mode.state()
    assert state["mode"] == "lexical_only" and state["forced"] is False and "injected outage" in state["reason"]
    assert _mode_gauge("lexical_only") == 1 and _mode_gauge("hybrid") == 0
    searched = calls["search"]
    # tripped: turns no longer pay for the failing store, and say they are degraded
    turn = rt.pipeline.run(Turn(message=QUESTION, kb="default"))
    assert calls["search"] == searched
    assert turn.degraded and any("lexical_only" in r for r in turn.degraded_reasons)
    assert turn.sources  # still answered from BM25
    assert rt.retriever.mode.probe_once() is False  # the store still fails its probe
    rt.vectors.fault.hook = None
    assert rt.retriever.mode.probe_once() is True
    assert rt.retriever.mode.state()["mode"] == "hybrid" and _mode_gauge("hybrid") == 1
    back = rt.retriever.search("default", QUESTION)
    assert back.vector_error is None and any(h.vector_rank is not None for h in back.hits)


def test_an_embedding_outage_trips_too_and_a_busy_engine_does_not(sample_runtime: Runtime) -> None:
    rt = sample_runtime
    rt.embedder.inner.fault.hook = lambda op: "embedder crashed"
    for i in range(rt.settings.retrieval_mode.trip_after - 1):
        assert "embedder crashed" in (rt.retriever.search("default", f"unseen question {i}").vector_error or "")
    assert rt.retriever.mode.state()["mode"] == "hybrid"  # not yet: one more in a row
    rt.retriever.search("default", "unseen question last")
    assert rt.retriever.mode.state()["mode"] == "lexical_only"
    rt.embedder.inner.fault.hook = None
    assert rt.retriever.mode.probe_once() is True


def test_chunks_ingested_during_the_outage_get_their_vectors_once_the_store_is_back(sample_runtime: Runtime) -> None:
    rt = sample_runtime
    rt.vectors.fault.hook = lambda op: "index directory unwritable"
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
    rt.vectors.fault.hook = None
    assert rt.retriever.mode.probe_once() is True  # back to hybrid: requeued
    rt.filler.drain()
    assert rt.ingestor.document("default", res.document_id).vector_status == "ready"
    vector = rt.retriever.search("default", "zebra paddock", mode="vector")
    assert vector.vector_error is None and vector.hits[0].document_id == res.document_id


def test_vectors_the_store_took_in_memory_but_never_persisted_are_requeued(sample_runtime: Runtime) -> None:
    """A flush that fails leaves chunks marked embedded that the on-disk index lacks: the requeue finds them."""
    rt = sample_runtime
    res = rt.ingestor.ingest_bytes("default", "outage/otter.md", b"# Otters\nOtters hold hands while sleeping.")
    rt.filler.run_once()
    rt.vectors.fault.hook = lambda op: "disk full" if op == "flush" else None
    try:
        rt.vectors.flush()
        raise AssertionError("flush should have failed")
    except VectorStoreError:
        pass
    rt.vectors._indexes.clear()  # what a restart sees: only the index on disk
    rt.vectors.fault.hook = None
    assert rt.filler.requeue() >= 1
    assert rt.ingestor.document("default", res.document_id).vector_status == "pending"
    rt.filler.drain()
    assert rt.ingestor.document("default", res.document_id).vector_status == "ready"
    assert rt.retriever.search("default", "otters sleeping", mode="vector").hits[0].document_id == res.document_id


def test_the_background_probe_restores_hybrid_by_itself_and_health_shows_the_mode(
    sample_runtime: Runtime, client: TestClient
) -> None:
    rt = sample_runtime
    assert client.get("/health").json()["checks"]["vector_store"]["details"]["retrieval_mode"]["mode"] == "hybrid"
    rt.settings.retrieval_mode.probe_interval_s = 0.1
    rt.retriever.mode.start()
    rt.vectors.fault.hook = lambda op: "injected outage"
    _trip(rt)
    details = client.get("/health").json()["checks"]["vector_store"]["details"]["retrieval_mode"]
    assert details["mode"] == "lexical_only" and "injected outage" in details["reason"]
    rt.vectors.fault.hook = None
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
