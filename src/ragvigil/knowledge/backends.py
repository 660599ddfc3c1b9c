"""Which vector store and which embedding model an instance uses, chosen by configuration alone.

Why one place: the embedded default (faiss files, the bundled e5) and the scaled mode (a Chroma server,
an OpenAI-compatible embeddings endpoint) must be interchangeable behind ``VectorStore`` and
``Embedder``; ``build_knowledge`` asks here and never names a backend itself.
"""

from __future__ import annotations

from ragvigil.config import Settings
from ragvigil.knowledge.embeddings import E5Embedder, Embedder, IdleReleasingEmbedder
from ragvigil.knowledge.vectorstore import FaissVectorStore, VectorStore


def build_vector_store(settings: Settings, dim: int) -> VectorStore:
    """``vector_store.backend``: faiss under the data dir, or the Chroma server at ``vector_store.url``."""
    vs = settings.vector_store
    if vs.backend == "chroma":
        from ragvigil.knowledge.chroma_store import ChromaVectorStore

        return ChromaVectorStore(vs.url.get_secret_value(), dim, vs.timeout_s, vs.batch, vs.collection_prefix)
    rs = settings.retrieval
    return FaissVectorStore(settings.index_dir, dim, rs.vector_index, auto_threshold=rs.vector_index_threshold)


def build_embedders(settings: Settings) -> tuple[Embedder, Embedder]:
    """The query embedder and the background filler's own (a batch of passages never delays a question).

    With ``embeddings.backend = "openai"`` both call the endpoint, each with its own breaker; the
    endpoint's dimension is checked here, so a wrong model stops the start instead of failing turns.
    """
    rs = settings.retrieval
    if settings.embeddings.backend == "openai":
        from ragvigil.knowledge.remote_embeddings import RemoteEmbedder

        query = RemoteEmbedder(settings.embeddings, role="query")
        query.verify_dimension()
        return query, RemoteEmbedder(settings.embeddings, role="filler")
    query_e5 = E5Embedder(threads=rs.embed_threads, engines=rs.query_engines, max_query_tokens=rs.max_query_tokens)
    # the filler's engine only while it has passages to embed (dropped after a minute idle: ~21 MB of RSS)
    filler_e5 = IdleReleasingEmbedder(lambda: E5Embedder(threads=rs.embed_threads), query_e5.dim, query_e5.name)
    return query_e5, filler_e5
