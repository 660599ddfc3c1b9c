"""Vector stores behind one small interface; the embedded default is faiss on local disk.

One index per knowledge base, ids are chunk ids. ``flat`` is exact inner product and
supports real deletes; ``hnsw`` is approximate and fast at 100k+ vectors, deletes are
tombstones that are compacted away by a rebuild once they pass a quarter of the index.
Writes mark the index dirty; ``flush`` persists atomically (temp file + rename) so a crash
leaves the previous index, and the ingest service re-embeds whatever the index lacks.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import faiss
import numpy as np

from ragvigil.ops import metrics

F = TypeVar("F", bound=Callable[..., Any])


def _metered(op: str) -> Callable[[F], F]:
    """Count each call of a store method by outcome (one decorator, no inline metrics)."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                result = fn(*args, **kwargs)
            except Exception:
                metrics.VECTOR_STORE_OPS.labels(op, "error").inc()
                raise
            metrics.VECTOR_STORE_OPS.labels(op, "ok").inc()
            return result

        return inner  # type: ignore[return-value]

    return wrap


class VectorStoreError(Exception):
    """The vector store cannot serve (unreadable files, bad dimensions...)."""


class VectorStore(Protocol):
    def upsert(self, kb: str, ids: Sequence[int], vectors: np.ndarray) -> None: ...

    def delete(self, kb: str, ids: Sequence[int]) -> None: ...

    def search(self, kb: str, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        q = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dim)
        with self._lock:
            entry = self._get(kb)
            if entry.index.ntotal == 0:
                return []
            want = min(k + len(entry.tombstones), entry.index.ntotal)
            scores, ids = entry.index.search(q, want)
            tombs = entry.tombstones
            out = [(int(i), float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0 and int(i) not in tombs]
        return out[:k]

    def ids(self, kb: str) -> set[int]:
        with self._lock:
            entry = self._get(kb)
            return entry.stored - entry.tombstones

    def count(self, kb: str) -> int:
        with self._lock:
            entry = self._get(kb)
            return len(entry.stored) - len(entry.tombstones)

    def check(self) -> None:
        """Raise VectorStoreError when the store cannot serve."""


class _KbIndex:
    def __init__(self, index: faiss.Index, tombstones: set[int]) -> None:
        self.index = index
        self.tombstones = tombstones
        # ids currently stored in ``index`` (tombstoned ones included): kept here so a write
        # never has to scan the whole index to learn what is present
        self.stored: set[int] = set(faiss.vector_to_array(index.id_map).tolist()) if index.ntotal else set()
        self.dirty = False


class FaissVectorStore:
    """faiss indexes in ``root/<kb>.<kind>.faiss`` (+ ``.tomb.json`` for HNSW tombstones).

    One lock guards reads and writes: faiss indexes are not safe to search while another
    thread adds to them, and a search here takes well under a millisecond.
    """

    def __init__(
        self, root: Path, dim: int, kind: Literal["flat", "hnsw"] = "flat", hnsw_m: int = 32, threads: int = 1
    ) -> None:
        self.root = root
        self.dim = dim
        self.kind = kind
        self.hnsw_m = hnsw_m
        self._indexes: dict[str, _KbIndex] = {}
        self._lock = threading.RLock()
        # one OpenMP thread: a single query gains nothing from more, and under CPU contention
        # extra threads turn a 0.3 ms search into a scheduler tick or worse
        faiss.omp_set_num_threads(threads)
        root.mkdir(parents=True, exist_ok=True)

    # -- files ---------------------------------------------------------------
    def _path(self, kb: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", kb):
            raise VectorStoreError(f"invalid knowledge base name {kb!r}")
        return self.root / f"{kb}.{self.kind}.faiss"

    def _new_index(self) -> faiss.Index:
        if self.kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = 80
            inner.hnsw.efSearch = 64
        else:
            inner = faiss.IndexFlatIP(self.dim)
        return faiss.IndexIDMap2(inner)

    def _get(self, kb: str) -> _KbIndex:
        with self._lock:
            entry = self._indexes.get(kb)
            if entry is not None:
                return entry
            path = self._path(kb)
            if path.exists():
                try:
                    index = faiss.read_index(str(path))
                    tomb_path = path.with_suffix(".tomb.json")
                    tombs = set(json.loads(tomb_path.read_text())) if tomb_path.exists() else set()
                except (RuntimeError, OSError, ValueError) as exc:
                    raise VectorStoreError(f"cannot read vector index {path}: {exc}") from exc
                if index.d != self.dim:
                    raise VectorStoreError(f"index {path} has dimension {index.d}, expected {self.dim}")
            else:
                index, tombs = self._new_index(), set()
            entry = self._indexes[kb] = _KbIndex(index, tombs)
            return entry

    # -- writes --------------------------------------------------------------
    @_metered("upsert")
    def upsert(self, kb: str, ids: Sequence[int], vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vecs = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        arr = np.asarray(ids, dtype=np.int64)
        with self._lock:
            entry = self._get(kb)
            present = entry.stored.intersection(arr.tolist())
            if present:
                if self.kind == "flat":
                    entry.index.remove_ids(np.asarray(sorted(present), dtype=np.int64))
                    entry.stored.difference_update(present)
                else:
                    # HNSW cannot drop a vector: re-adding an id needs the old one compacted away
                    entry.tombstones.update(present)
                    self._compact(entry)
            entry.index.add_with_ids(vecs, arr)
            entry.stored.update(arr.tolist())
            entry.tombstones.difference_update(arr.tolist())
            entry.dirty = True

    @_metered("delete")
    def delete(self, kb: str, ids: Sequence[int]) -> None:
        if len(ids) == 0:
            return
        with self._lock:
            entry = self._get(kb)
            present = entry.stored.intersection(int(i) for i in ids)
            if not present:
                return
            if self.kind == "flat":
                entry.index.remove_ids(np.asarray(sorted(present), dtype=np.int64))
                entry.stored.difference_update(present)
            else:
                entry.tombstones.update(present)
                if len(entry.tombstones) > max(1000, entry.index.ntotal // 4):
                    self._compact(entry)
            entry.dirty = True

    def _compact(self, entry: _KbIndex) -> None:
        keep = np.array(sorted(entry.stored - entry.tombstones), dtype=np.int64)
        vecs = np.vstack([entry.index.reconstruct(int(i)) for i in keep]) if len(keep) else None
        entry.index = self._new_index()
        if vecs is not None:
            entry.index.add_with_ids(vecs.astype(np.float32), keep)
        entry.stored = set(keep.tolist())
        entry.tombstones = set()
        entry.dirty = True

    def drop(self, kb: str) -> None:
        with self._lock:
            self._indexes.pop(kb, None)
            for p in (self._path(kb), self._path(kb).with_suffix(".tomb.json")):
                p.unlink(missing_ok=True)

    @_metered("flush")
    def flush(self) -> None:
        """Persist every changed index atomically."""
        with self._lock:
            for kb, entry in self._indexes.items():
                if not entry.dirty:
                    continue
                path = self._path(kb)
                tmp = path.with_suffix(".tmp")
                faiss.write_index(entry.index, str(tmp))
                os.replace(tmp, path)
                tomb = path.with_suffix(".tomb.json")
                if entry.tombstones:
                    tomb.write_text(json.dumps(sorted(entry.tombstones)))
                else:
                    tomb.unlink(missing_ok=True)
                entry.dirty = False

    # -- reads ---------------------------------------------------------------
    @_metered("search")
    def search(self, kb: str, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        entry = self._get(kb)
        if entry.index.ntotal == 0:
            return []
        q = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dim)
        want = min(k + len(entry.tombstones), entry.index.ntotal)
        scores, ids = entry.index.search(q, want)
        out = [
            (int(i), float(s))
            for s, i in zip(scores[0], ids[0], strict=True)
            if i >= 0 and int(i) not in entry.tombstones
        ]
        return out[:k]

    def ids(self, kb: str) -> set[int]:
        entry = self._get(kb)
        if entry.index.ntotal == 0:
            return set()
        return set(faiss.vector_to_array(entry.index.id_map).tolist()) - entry.tombstones

    def count(self, kb: str) -> int:
        entry = self._get(kb)
        return entry.index.ntotal - len(entry.tombstones)

    def check(self) -> None:
        """The index directory must take a write (a flush would fail otherwise) and loaded indexes read."""
        probe = self.root / ".health-probe"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise VectorStoreError(f"vector index directory {self.root} is not writable: {exc}") from exc
        for kb in list(self._indexes):
            self._get(kb)
