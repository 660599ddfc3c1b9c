"""The ``VectorStore`` on a Chroma server (``chroma run``), shared by every replica of a service.

Why a server: with N replicas each faiss file would be its own copy, filled N times and drifting; one
Chroma collection per knowledge base is filled once (by whichever replica embeds) and searched by all.
The vectors are ours (e5, normalised): the collections have no embedding function, Chroma only
stores and searches them in cosine space, and ``search`` turns Chroma's cosine *distance* back into
the similarity faiss's inner product gives, so retrieval's thresholds mean the same on both.

Every request has a short timeout and any failure (refused, timeout, a server error) is a
``VectorStoreError``: retrieval then counts it towards ``lexical_only`` and the filler keeps the
chunks pending, exactly as for a faiss index that cannot be read. ``flush`` has nothing to do: the
server persists each write before it answers.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ragvigil.knowledge.vectorstore import VectorStoreError, metered

ID_PAGE = 5000  # ids read per request when listing a collection (a bounded page, whatever its size)
KB_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Chroma's defaults (ef 100, 16 neighbours) found 0.71 of the true top 10 among 5k random unit vectors of
# 384 dimensions; these found 0.97, for twice the insert time (a search stays a few milliseconds)
HNSW = {"space": "cosine", "ef_construction": 200, "ef_search": 200, "max_neighbors": 32}


def collection_name(prefix: str, kb: str) -> str:
    """A Chroma-valid collection name for ``kb``, unique per name.

    Chroma wants 3-512 characters of ``[A-Za-z0-9._-]`` starting and ending alphanumeric, without
    ``..``; a knowledge base may be named ``a..b`` or ``-x``. Its characters outside ``[A-Za-z0-9]`` become
    ``_`` and a hash of the real name keeps ``a.b`` and ``a_b`` apart.
    """
    if not KB_NAME.fullmatch(kb):
        raise VectorStoreError(f"invalid knowledge base name {kb!r}")
    safe = re.sub(r"[^A-Za-z0-9]", "_", kb)
    digest = hashlib.sha256(kb.encode()).hexdigest()[:10]
    return f"{prefix}{safe}_{digest}"


class ChromaVectorStore:
    """One cosine collection per knowledge base on a Chroma server; ids are chunk ids as strings.

    The client is made on first use (and again after a failure), so a server that is down when the
    service starts only makes the vector side wait for it. Collection handles are cached per KB; one
    another replica dropped is looked up again once.
    """

    remote = True  # every call is a request to the server: callers on a hot path ask less often

    def __init__(
        self, url: str, dim: int, timeout_s: float = 2.0, batch: int = 256, collection_prefix: str = "ragvigil_"
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = url
        self.dim = dim
        self.timeout_s = timeout_s
        self.batch = max(1, batch)
        self.prefix = collection_prefix
        self._host, self._ssl = parts.hostname, parts.scheme == "https"
        self._port = parts.port or (443 if self._ssl else 80)
        self._shown = f"{parts.scheme}://{self._host}:{self._port}"  # for messages: never a password in the URL
        self._client: Any = None
        self._max_batch: int | None = None
        self._collections: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        """scheme://host:port, for messages: never a password in the URL."""
        return self._shown

    # -- connection -----------------------------------------------------------
    def _connect(self) -> Any:
        with self._lock:
            if self._client is not None:
                return self._client
        import chromadb
        import httpx
        from chromadb.config import Settings as ChromaSettings

        # chromadb logs each of its components starting and stopping at DEBUG: while the server is down that
        # is a dozen lines per probe, which would bury ragvigil's own lines in a development log
        logging.getLogger("chromadb").setLevel(logging.INFO)

        try:
            client = chromadb.HttpClient(
                host=self._host,
                port=self._port,
                ssl=self._ssl,
                settings=ChromaSettings(anonymized_telemetry=False),
            )
        except Exception as exc:
            raise self._failed("connect", exc) from exc
        # the client's own httpx session has no timeout at all: a hung server would hang a turn
        session = getattr(getattr(client, "_server", None), "_session", None)
        if session is not None:
            session.timeout = httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 2.0))
        with self._lock:
            self._client = client
        return client

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one client call; every failure becomes a ``VectorStoreError``."""
        try:
            return fn()
        except VectorStoreError:
            raise
        except Exception as exc:
            raise self._failed(what, exc) from exc

    def _failed(self, what: str, exc: Exception) -> VectorStoreError:
        """The ``VectorStoreError`` for ``exc``. The client is kept: its connection pool reconnects to a
        restarted server by itself, and the collections' ids are the server's, kept on its disk."""
        return VectorStoreError(f"chroma at {self._shown}: {what} failed: {type(exc).__name__}: {exc}")

    def _collection(self, kb: str, create: bool = True) -> Any:
        name = collection_name(self.prefix, kb)
        with self._lock:
            col = self._collections.get(name)
        if col is not None:
            return col
        client = self._connect()
        if create:
            col = self._call(
                "create collection",
                lambda: client.get_or_create_collection(
                    name,
                    embedding_function=None,
                    configuration={"hnsw": HNSW},
                    metadata={"ragvigil_kb": kb, "dim": self.dim},
                ),
            )
        else:
            from chromadb.errors import NotFoundError

            try:
                col = client.get_collection(name, embedding_function=None)
            except NotFoundError:
                return None
            except Exception as exc:
                raise self._failed("get collection", exc) from exc
        with self._lock:
            self._collections[name] = col
        return col

    def _on(self, kb: str, what: str, fn: Callable[[Any], Any]) -> Any:
        """``fn(collection)``; a collection dropped meanwhile (by another replica) is fetched again once."""
        from chromadb.errors import NotFoundError

        col = self._collection(kb)
        try:
            return fn(col)
        except NotFoundError:
            with self._lock:
                self._collections.pop(collection_name(self.prefix, kb), None)
            col = self._collection(kb)
            return self._call(what, lambda: fn(col))
        except Exception as exc:
            raise self._failed(what, exc) from exc

    def _batch_size(self) -> int:
        """Our bound, and never more than the server takes in one request."""
        if self._max_batch is None:
            client = self._connect()
            limit = self._call("max batch size", lambda: int(client.get_max_batch_size()))
            self._max_batch = limit if limit > 0 else self.batch
        return max(1, min(self.batch, self._max_batch))

    # -- writes -----------------------------------------------------------------
    @metered("upsert")
    def upsert(self, kb: str, ids: Sequence[int], vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vecs = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        str_ids = [str(int(i)) for i in ids]
        step = self._batch_size()
        for start in range(0, len(str_ids), step):
            part_ids, part = str_ids[start : start + step], vecs[start : start + step]
            self._on(kb, "upsert", lambda col, i=part_ids, v=part: col.upsert(ids=i, embeddings=v))

    @metered("delete")
    def delete(self, kb: str, ids: Sequence[int]) -> None:
        if len(ids) == 0:
            return
        str_ids = [str(int(i)) for i in ids]
        step = self._batch_size()
        for start in range(0, len(str_ids), step):
            part = str_ids[start : start + step]
            self._on(kb, "delete", lambda col, i=part: col.delete(ids=i))

    def drop(self, kb: str) -> None:
        """Delete the knowledge base's collection (absent already: nothing to do)."""
        from chromadb.errors import NotFoundError

        name = collection_name(self.prefix, kb)
        with self._lock:
            self._collections.pop(name, None)
        client = self._connect()
        try:
            client.delete_collection(name)
        except NotFoundError:
            return
        except Exception as exc:
            raise self._failed("drop", exc) from exc

    @metered("flush")
    def flush(self) -> None:
        """Nothing to do: the server has persisted every write it acknowledged."""

    # -- reads ------------------------------------------------------------------
    @metered("search")
    def search(self, kb: str, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        if k <= 0:
            return []
        q = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dim)

        def query(col: Any) -> Any:
            n = col.count()
            if n == 0:
                return None
            return col.query(query_embeddings=q, n_results=min(k, n), include=["distances"])

        result = self._on(kb, "search", query)
        if result is None:
            return []
        ids, distances = result["ids"][0], result["distances"][0]
        # Chroma's cosine space gives 1 - cos: back to the similarity faiss's inner product gives
        return [(int(i), float(1.0 - d)) for i, d in zip(ids, distances, strict=True)]

    def ids(self, kb: str) -> set[int]:
        """Every id in the collection, read in bounded pages."""
        out: set[int] = set()
        offset = 0
        while True:
            page = self._on(kb, "list ids", lambda col, o=offset: col.get(include=[], limit=ID_PAGE, offset=o)["ids"])
            out.update(int(i) for i in page)
            if len(page) < ID_PAGE:
                return out
            offset += len(page)

    def count(self, kb: str) -> int:
        return int(self._on(kb, "count", lambda col: col.count()))

    def existing_count(self, kb: str) -> int | None:
        """The collection's size, or None when it does not exist: a read-only look (``count`` creates it)."""
        col = self._collection(kb, create=False)
        return None if col is None else int(self._call("count", col.count))

    def check(self) -> None:
        """The server answers its heartbeat within the timeout (else ``VectorStoreError``)."""
        client = self._connect()
        self._call("heartbeat", client.heartbeat)
