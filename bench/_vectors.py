"""The e5 query vectors of labelled data sets, cached on disk: the quality benchmarks and the training
scripts embed the same tens of thousands of sentences, and at ~65 sentences/s a core that is an hour
each time.

The vectors are the ones a chat turn gets (``E5Embedder.embed_query``: the "query: " side, cut to one
e5 window), so a classifier trained on them reads a turn's own embedding. The cache is a SQLite file
keyed by model and a hash of the text, outside the checkout (``RAGVIGIL_BENCH_CACHE``, default
``~/.cache/ragvigil/bench-vectors.sqlite``); several processes may fill it at once.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ragvigil.knowledge.embeddings import E5Embedder

BATCH = 64


def cache_path() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ragvigil" / "bench-vectors.sqlite"
    return Path(os.environ.get("RAGVIGIL_BENCH_CACHE", default))


class VectorCache:
    """``vectors(texts)``: one L2-normalised float32 row per text, embedded only once per machine."""

    def __init__(self, path: Path | None = None, threads: int = 1) -> None:
        self.path = path or cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.threads = threads
        self._embedder: E5Embedder | None = None
        self._db = sqlite3.connect(self.path, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        self._db.commit()

    @property
    def model(self) -> str:
        return E5Embedder.name

    def key(self, text: str) -> str:
        return hashlib.sha256(f"{self.model}\0{text}".encode()).hexdigest()

    def vectors(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        keys = [self.key(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 900):  # SQLite's bound on query parameters
            chunk = keys[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for key, blob in self._db.execute(f"SELECT key, vec FROM vectors WHERE key IN ({marks})", chunk):
                found[key] = np.frombuffer(blob, dtype=np.float32)
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in found}.items())
        for start in range(0, len(missing), BATCH):
            batch = missing[start : start + BATCH]
            vecs = self._embed([t for _, t in batch])
            rows = [(k, v.astype(np.float32).tobytes()) for (k, _), v in zip(batch, vecs, strict=True)]
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)
            self._db.commit()
            found.update({k: v.astype(np.float32) for (k, _), v in zip(batch, vecs, strict=True)})
            if progress:
                print(f"  embedded {min(start + BATCH, len(missing))}/{len(missing)}", flush=True)
        return np.stack([found[k] for k in keys]) if keys else np.zeros((0, 384), dtype=np.float32)

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self._embedder is None:
            self._embedder = E5Embedder(threads=self.threads)
        return np.stack([self._embedder.embed_query(t) for t in texts]) if len(texts) < 2 else self._batch(texts)

    def _batch(self, texts: list[str]) -> np.ndarray:
        """A batch through one engine, each text cut to one window as ``embed_query`` does."""
        from ragvigil.knowledge.embeddings import _fit_tokens

        assert self._embedder is not None
        engine = self._embedder._pool.get()
        try:
            fitted = [_fit_tokens(engine, t, self._embedder.max_query_tokens) for t in texts]
            return np.asarray(engine.query(fitted), dtype=np.float32).reshape(len(texts), self._embedder.dim)
        finally:
            self._embedder._pool.put(engine)

    def close(self) -> None:
        self._db.close()
