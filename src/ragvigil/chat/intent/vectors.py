"""The example vectors of an intents file, kept on disk so a restart embeds none of them again.

Keyed by model name and a hash of the text, so an edited file embeds only its new examples and a
new model embeds everything. The file holds exactly the current examples after each load (never
more than the file's bound on examples), written atomically: a crash mid-write leaves the old one.
A cache file that cannot be read is ignored (and rewritten), never an error: it only saves time.

The shipped intents' vectors come with the package (``default_vectors.npz``, written by
``python -m ragvigil.chat.intent vectors``), so a first start, or any new data dir, embeds none of
the ~300 default examples (~10 s of one core): they are read as a second source behind the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

__all__ = ["SHIPPED_VECTORS", "ExampleVectors", "QueryEmbedder"]

SHIPPED_VECTORS = Path(__file__).with_name("default_vectors.npz")

log = logging.getLogger(__name__)


class QueryEmbedder(Protocol):
    name: str

    def embed_query(self, text: str, timeout_s: float | None = None) -> np.ndarray: ...


class ExampleVectors:
    """``vectors(texts)``: one query-side e5 row per text, from ``path`` when present, else embedded."""

    def __init__(
        self,
        embedder: QueryEmbedder,
        path: Path | None,
        max_entries: int = 20_000,
        shipped: Path | None = SHIPPED_VECTORS,
    ) -> None:
        self.embedder = embedder
        self.path = path
        self.shipped = shipped
        self.max_entries = max_entries
        self.embedded = 0  # texts embedded by this object (not found on disk): what a restart should not repeat

    def key(self, text: str) -> str:
        model = getattr(self.embedder, "name", type(self.embedder).__name__)
        return hashlib.sha256(f"{model}\0query\0{text}".encode()).hexdigest()

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        keys = [self.key(t) for t in texts]
        known = self._read()
        if self.shipped is not None and any(k not in known for k in keys):
            shipped = self._read(self.shipped)
            known.update({k: shipped[k] for k in keys if k not in known and k in shipped})
        rows = []
        for key, text in zip(keys, texts, strict=True):
            if key not in known:
                known[key] = np.asarray(self.embedder.embed_query(text), dtype=np.float32).ravel()
                self.embedded += 1
            rows.append(known[key])
        kept = {k: known[k] for k in dict.fromkeys(keys[: self.max_entries])}
        if self.path is not None and (self.embedded or len(kept) != len(known)):
            self._write(kept)
        return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    def _read(self, path: Path | None = None) -> dict[str, np.ndarray]:
        path = path or self.path
        if path is None or not path.exists():
            return {}
        try:
            with np.load(path, allow_pickle=False) as z:
                keys, vecs = z["keys"], z["vectors"]
                if len(keys) != len(vecs) or len(keys) > self.max_entries:
                    raise ValueError("keys and vectors differ in length or exceed the bound")
                return {str(k): v for k, v in zip(keys, vecs, strict=True)}
        except (OSError, ValueError, KeyError) as exc:
            log.warning("intent_vector_cache_unreadable", extra={"path": str(path), "error": str(exc)})
            return {}

    def _write(self, entries: dict[str, np.ndarray], path: Path | None = None) -> None:
        path = path or self.path
        assert path is not None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            with tmp.open("wb") as f:
                np.savez(f, keys=np.array(list(entries)), vectors=np.stack(list(entries.values())).astype(np.float32))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("intent_vector_cache_not_written", extra={"path": str(path), "error": str(exc)})
