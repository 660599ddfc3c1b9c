"""Builds the knowledge subsystem of one instance: tokenizer, embedders, vector index, catalog, retrieval.

Why a builder here: the parts depend on each other in one order (the tokenizer and the query
embedder before the index and the retriever) and only this package knows it; the runtime just
asks for a ``Knowledge`` and copies its parts onto itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ragvigil.config import Settings
from ragvigil.knowledge.backends import build_embedders, build_vector_store
from ragvigil.knowledge.catalog import Catalog
from ragvigil.knowledge.embeddings import CachedQueryEmbedder, SharedVectorCache
from ragvigil.knowledge.ingest import Ingestor
from ragvigil.knowledge.originals import build_original_store
from ragvigil.knowledge.quarantine import QuarantineGauge
from ragvigil.knowledge.reindex import Reindexer
from ragvigil.knowledge.retrieval import HybridRetriever
from ragvigil.knowledge.retrieval_mode import build_retrieval_mode
from ragvigil.knowledge.tokenize import Tokenizer
from ragvigil.knowledge.vector_filler import VectorFiller
from ragvigil.knowledge.vectorstore import VectorStore
from ragvigil.ops import metrics
from ragvigil.ops.periodic import Periodic
from ragvigil.storage.db import Database


class FaultSeams(Protocol):
    """Where fault injection wraps this subsystem (``ops.faults.Faults``); each returns its argument when off."""

    def embedder(self, inner: Any) -> Any: ...

    def vector_store(self, inner: Any) -> Any: ...


def _same(inner: Any) -> Any:
    return inner


@dataclass
class Knowledge:
    tokenizer: Tokenizer
    embedder: CachedQueryEmbedder
    vectors: VectorStore  # faiss files or a Chroma server (knowledge/backends.py)
    catalog: Catalog
    ingestor: Ingestor
    retriever: HybridRetriever
    filler: VectorFiller
    pending_gauge: Periodic  # keeps ragvigil_vectors_pending fresh while serving
    quarantine_gauge: QuarantineGauge  # ragvigil_documents_quarantined at start (the catalog sets it on change)
    reindexer: Reindexer  # `ragvigil reindex`: a new generation from the kept originals, then one switch


def build_knowledge(
    settings: Settings, db: Database, faults: FaultSeams | None = None, shared_cache: SharedVectorCache | None = None
) -> Knowledge:
    """``faults``: the fault-injection hooks put around the query embedder and the vector store (drills);
    ``shared_cache``: the query cache's tier shared with other replicas (Redis), none in embedded mode."""
    rs = settings.retrieval
    tokenizer = Tokenizer(settings.cache_dir)
    wrap_embedder = faults.embedder if faults is not None else _same
    wrap_store = faults.vector_store if faults is not None else _same
    query_embedder, passage_embedder = build_embedders(settings)  # bundled e5, or an embeddings endpoint
    embedder = CachedQueryEmbedder(wrap_embedder(query_embedder), rs.query_cache_size, shared_cache)
    vectors = wrap_store(build_vector_store(settings, embedder.dim))  # faiss files, or a Chroma server
    catalog = Catalog(db)
    originals = build_original_store(settings)  # every ingested file's bytes: the data dir, or an object store
    ingestor = Ingestor(catalog, tokenizer, rs, vectors, settings.ingest, originals)
    # its own engine: a batch of passages must never make questions wait behind it (an embedding fault
    # hits it too: the engines are one embedder to a drill)
    filler = VectorFiller(
        db,
        wrap_embedder(passage_embedder),
        vectors,
        batch=rs.embed_batch,
        max_sentences=rs.sentence_vectors_per_chunk,
    )
    # hybrid, or BM25 alone while the vector side fails; back by itself (a background prober)
    mode = build_retrieval_mode(settings.retrieval_mode, vectors, embedder, filler)
    retriever = HybridRetriever(catalog, tokenizer, embedder, vectors, rs, mode)
    gauge = Periodic("vectors-pending", 5.0, lambda: metrics.VECTORS_PENDING.set(ingestor.pending_vectors()))
    reindexer = Reindexer(
        ingestor,
        originals,
        filler.embedder,
        vectors,
        filler.sentences,
        settings.data_dir / "reindex",
        rs.sentence_vectors_per_chunk,
        rs.embed_batch,
    )
    reindexer.recover()  # a job its process left half-built: interrupted, its staged rows gone
    return Knowledge(
        tokenizer, embedder, vectors, catalog, ingestor, retriever, filler, gauge, QuarantineGauge(catalog), reindexer
    )
