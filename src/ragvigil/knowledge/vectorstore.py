"""Vector stores behind one small interface; the embedded default is faiss on local disk.

One index per knowledge base, ids are chunk ids. ``flat`` is exact inner product and
supports real deletes; ``hnsw`` is approximate and fast at 100k+ vectors, deletes are
tombstones that are compacted away by a rebuild once they pass a quarter of the index.
``auto`` chooses per knowledge base by size: flat below a threshold (exact, and fast enough
there), HNSW from it on. Crossing it starts a background build of the HNSW index from the flat
index's own vectors while searches keep using the flat one; writes that arrive meanwhile are
logged and replayed onto the new index before one swap under the lock. Back below half the
threshold, the next compaction goes back to flat (the gap keeps a KB at the edge from flapping).
Writes mark the index dirty; ``flush`` persists atomically (temp file + rename) so a crash
leaves the previous index, and the ingest service re-embeds whatever the index lacks.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import faiss
import numpy as np

from ragvigil.ops import metrics

F = TypeVar("F", bound=Callable[..., Any])
Kind = Literal["flat", "hnsw"]
KINDS: tuple[Kind, ...] = ("flat", "hnsw")
# an HNSW index goes back to flat at a compaction only below this share of the threshold
SHRINK_SHARE = 0.5
# a failed background build is tried again after this many seconds (not on every upsert)
REBUILD_RETRY_S = 60.0

log = logging.getLogger(__name__)


def metered(op: str) -> Callable[[F], F]:
    """Count each call of a store method by outcome (one decorator, no inline metrics; every backend's)."""

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

    def search(self, kb: str, vector: np.ndarray, k: int) -> list[tuple[int, float]]: ...

    def ids(self, kb: str) -> set[int]: ...

    def count(self, kb: str) -> int: ...

    def check(self) -> None:
        """Raise VectorStoreError when the store cannot serve."""


class _Gate:
    """Searches share an index; a write waits for the searches in progress and holds new ones back.

    faiss releases the GIL, and reads of an index may run together (searches, a flush writing it to
    disk), but an add or remove beside any of them reallocates memory they read."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writing += 1
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._writing -= 1
                self._cond.notify_all()


class _KbIndex:
    def __init__(self, index: faiss.Index, tombstones: set[int], kind: Kind) -> None:
        self.index = index
        self.tombstones = tombstones
        self.kind: Kind = kind
        # ids currently stored in ``index`` (tombstoned ones included): kept here so a write
        # never has to scan the whole index to learn what is present
        self.stored: set[int] = set(faiss.vector_to_array(index.id_map).tolist()) if index.ntotal else set()
        self.dirty = False
        # while a background HNSW build runs: every write since its snapshot, replayed before the swap
        self.log: list[tuple[np.ndarray, np.ndarray | None]] | None = None
        self.rebuild: threading.Thread | None = None
        self.retry_after = 0.0

    def live(self) -> int:
        return len(self.stored) - len(self.tombstones)


class FaissVectorStore:
    """faiss indexes in ``root/<kb>.<kind>.faiss`` (+ ``.tomb.json`` for HNSW tombstones).

    One lock orders writes, flushes and the swap of a rebuilt index; searches pass a gate that only
    writes close (``_Gate``), so a flush writing a large index to disk never holds them up, and a
    write waits for the searches already running. ``kind="auto"``: flat below ``auto_threshold`` live vectors, HNSW from
    it on, rebuilt in the background (module docstring).
    """

    def __init__(
        self,
        root: Path,
        dim: int,
        kind: Literal["flat", "hnsw", "auto"] = "flat",
        hnsw_m: int = 32,
        threads: int = 1,
        auto_threshold: int = 100_000,
    ) -> None:
        self.root = root
        self.dim = dim
        self.kind = kind
        self.hnsw_m = hnsw_m
        self.auto_threshold = auto_threshold
        self._indexes: dict[str, _KbIndex] = {}
        self._lock = threading.RLock()
        self._gate = _Gate()  # taken after ``_lock`` by writers, never with ``_lock`` by searches
        # one OpenMP thread: a single query gains nothing from more, and under CPU contention
        # extra threads turn a 0.3 ms search into a scheduler tick or worse
        faiss.omp_set_num_threads(threads)
        root.mkdir(parents=True, exist_ok=True)

    # -- files ---------------------------------------------------------------
    def _path(self, kb: str, kind: Kind | None = None) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", kb):
            raise VectorStoreError(f"invalid knowledge base name {kb!r}")
        return self.root / f"{kb}.{kind or self._fixed_kind()}.faiss"

    def _fixed_kind(self) -> Kind:
        return "flat" if self.kind == "auto" else self.kind

    def _new_index(self, kind: Kind) -> faiss.Index:
        if kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = 80
            inner.hnsw.efSearch = 64
        else:
            inner = faiss.IndexFlatIP(self.dim)
        return faiss.IndexIDMap2(inner)

    def _stored_file(self, kb: str) -> tuple[Path, Kind] | None:
        """The file a KB's index is read from; in ``auto`` the newer of the two kinds (a crash
        between writing the new kind and removing the old one leaves both)."""
        if self.kind != "auto":
            path = self._path(kb)
            return (path, self.kind) if path.exists() else None
        found = [(self._path(kb, k), k) for k in KINDS if self._path(kb, k).exists()]
        if not found:
            return None
        found.sort(key=lambda pk: pk[0].stat().st_mtime_ns)
        for stale, _ in found[:-1]:
            stale.unlink(missing_ok=True)
            stale.with_suffix(".tomb.json").unlink(missing_ok=True)
        return found[-1]

    def _get(self, kb: str) -> _KbIndex:
        entry = self._indexes.get(kb)  # a loaded index without the lock: a search must not wait for a flush
        if entry is not None:
            return entry
        with self._lock:
            entry = self._indexes.get(kb)
            if entry is not None:
                return entry
            stored = self._stored_file(kb)
            if stored is not None:
                path, kind = stored
                try:
                    index = faiss.read_index(str(path))
                    tomb_path = path.with_suffix(".tomb.json")
                    tombs = set(json.loads(tomb_path.read_text())) if tomb_path.exists() else set()
                except (RuntimeError, OSError, ValueError) as exc:
                    raise VectorStoreError(f"cannot read vector index {path}: {exc}") from exc
                if index.d != self.dim:
                    raise VectorStoreError(f"index {path} has dimension {index.d}, expected {self.dim}")
            else:
                kind = self._fixed_kind()
                index, tombs = self._new_index(kind), set()
            entry = self._indexes[kb] = _KbIndex(index, tombs, kind)
            _show_kind(kb, kind)
            self._maybe_rebuild(kb, entry)  # e.g. a crash during a build left a large flat index
            return entry

    # -- writes --------------------------------------------------------------
    @metered("upsert")
    def upsert(self, kb: str, ids: Sequence[int], vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vecs = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        arr = np.asarray(ids, dtype=np.int64)
        with self._lock:
            entry = self._get(kb)
            with self._gate.write():
                self._write(entry, arr, vecs)
            if entry.log is not None:
                entry.log.append((arr.copy(), vecs.copy()))
            self._maybe_rebuild(kb, entry)

    @metered("delete")
    def delete(self, kb: str, ids: Sequence[int]) -> None:
        if len(ids) == 0:
            return
        arr = np.asarray([int(i) for i in ids], dtype=np.int64)
        with self._lock:
            entry = self._get(kb)
            if entry.log is not None:
                entry.log.append((arr, None))
            with self._gate.write():
                self._remove(entry, arr)
            _show_kind(kb, entry.kind)

    def _write(self, entry: _KbIndex, arr: np.ndarray, vecs: np.ndarray) -> None:
        present = entry.stored.intersection(arr.tolist())
        if present:
            if entry.kind == "flat":
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

    def _remove(self, entry: _KbIndex, arr: np.ndarray) -> None:
        present = entry.stored.intersection(arr.tolist())
        if not present:
            return
        if entry.kind == "flat":
            entry.index.remove_ids(np.asarray(sorted(present), dtype=np.int64))
            entry.stored.difference_update(present)
        else:
            entry.tombstones.update(present)
            if len(entry.tombstones) > max(1000, entry.index.ntotal // 4):
                self._compact(entry)
        entry.dirty = True

    def _compact(self, entry: _KbIndex) -> None:
        """Rebuild without the tombstoned vectors; in ``auto`` an HNSW index that shrank below
        half the threshold comes back as flat (exact, real deletes)."""
        keep = np.array(sorted(entry.stored - entry.tombstones), dtype=np.int64)
        vecs = np.vstack([entry.index.reconstruct(int(i)) for i in keep]) if len(keep) else None
        if self.kind == "auto" and entry.kind == "hnsw" and len(keep) < self.auto_threshold * SHRINK_SHARE:
            entry.kind = "flat"
        entry.index = self._new_index(entry.kind)
        if vecs is not None:
            entry.index.add_with_ids(vecs.astype(np.float32), keep)
        entry.stored = set(keep.tolist())
        entry.tombstones = set()
        entry.dirty = True

    # -- background rebuild (auto) -------------------------------------------
    def _maybe_rebuild(self, kb: str, entry: _KbIndex) -> None:
        """Start the HNSW build once a flat index of an ``auto`` store reaches the threshold."""
        if (
            self.kind != "auto"
            or entry.kind != "flat"
            or entry.rebuild is not None
            or entry.live() < self.auto_threshold
            or time.monotonic() < entry.retry_after
        ):
            _show_kind(kb, entry.kind)
            return
        entry.log = []
        entry.rebuild = threading.Thread(
            target=self._rebuild, args=(kb, entry, *self._snapshot(entry)), name=f"hnsw-rebuild-{kb}", daemon=True
        )
        entry.rebuild.start()

    @staticmethod
    def _snapshot(entry: _KbIndex) -> tuple[np.ndarray, np.ndarray]:
        """Every vector of a flat index with its id, read back from the index itself."""
        ids = faiss.vector_to_array(entry.index.id_map).astype(np.int64)
        inner = faiss.downcast_index(entry.index.index)
        vecs = inner.reconstruct_n(0, inner.ntotal) if inner.ntotal else np.empty((0, entry.index.d), np.float32)
        return ids, np.ascontiguousarray(vecs, dtype=np.float32)

    def _build_hnsw(self, ids: np.ndarray, vecs: np.ndarray) -> faiss.Index:
        """The slow part, outside the lock (faiss releases the GIL while it adds)."""
        index = self._new_index("hnsw")
        for start in range(0, len(ids), 10_000):
            index.add_with_ids(vecs[start : start + 10_000], ids[start : start + 10_000])
        return index

    def _replay(self, entry: _KbIndex, writes: list[tuple[np.ndarray, np.ndarray | None]]) -> None:
        """Apply logged writes in order, collapsed to the last one per id (one compaction at most)."""
        last: dict[int, np.ndarray | None] = {}
        for arr, vecs in writes:
            for j, i in enumerate(arr.tolist()):
                last.pop(i, None)  # keep insertion order = order of the last write
                last[i] = None if vecs is None else vecs[j]
        gone = [i for i, v in last.items() if v is None]
        if gone:
            self._remove(entry, np.asarray(gone, dtype=np.int64))
        put = [(i, v) for i, v in last.items() if v is not None]
        if put:
            self._write(
                entry,
                np.asarray([i for i, _ in put], dtype=np.int64),
                np.vstack([v for _, v in put]).astype(np.float32),
            )

    def _rebuild(self, kb: str, entry: _KbIndex, ids: np.ndarray, vecs: np.ndarray) -> None:
        outcome = "error"
        try:
            new = _KbIndex(self._build_hnsw(ids, vecs), set(), "hnsw")
            with self._lock:  # first catch-up outside the lock, so the swap itself replays little
                writes, entry.log = (entry.log or []), []
            self._replay(new, writes)
            with self._lock:
                if self._indexes.get(kb) is not entry:
                    outcome = "abandoned"  # the KB was dropped meanwhile
                    return
                self._replay(new, entry.log or [])
                new.dirty = True
                self._indexes[kb] = new
                _show_kind(kb, new.kind)
                self.flush()  # the new kind's file by temp name + rename, then the old kind's file goes
            outcome = "ok"
            log.info("vector_index_rebuilt", extra={"kb": kb, "kind": new.kind, "vectors": new.live()})
        except Exception:
            log.exception("vector_index_rebuild_failed", extra={"kb": kb})
            entry.retry_after = time.monotonic() + REBUILD_RETRY_S
        finally:
            with self._lock:
                entry.log = None
                entry.rebuild = None
            metrics.VECTOR_INDEX_REBUILDS.labels(outcome).inc()

    def kind_of(self, kb: str) -> Kind:
        """The kind a KB's index is now (in ``auto`` it changes with the KB's size)."""
        return self._get(kb).kind

    def wait_rebuild(self, kb: str, timeout_s: float) -> bool:
        """Wait for a running background build of ``kb``; True when none is running any more."""
        with self._lock:
            thread = self._get(kb).rebuild
        if thread is not None:
            thread.join(timeout_s)
            return not thread.is_alive()
        return True

    def drop(self, kb: str) -> None:
        with self._lock:
            self._indexes.pop(kb, None)
            for kind in KINDS:
                for p in (self._path(kb, kind), self._path(kb, kind).with_suffix(".tomb.json")):
                    p.unlink(missing_ok=True)
            for kind in KINDS:
                if (kb, kind) in _shown:
                    metrics.VECTOR_INDEX_KIND.remove(kb, kind)
                    _shown.discard((kb, kind))

    @metered("flush")
    def flush(self) -> None:
        """Persist every changed index atomically (temp file + rename), then drop the other kind's file."""
        with self._lock:
            for kb, entry in self._indexes.items():
                if not entry.dirty:
                    continue
                path = self._path(kb, entry.kind)
                tmp = path.with_suffix(".tmp")
                faiss.write_index(entry.index, str(tmp))
                os.replace(tmp, path)
                tomb = path.with_suffix(".tomb.json")
                if entry.tombstones:
                    tomb.write_text(json.dumps(sorted(entry.tombstones)))
                else:
                    tomb.unlink(missing_ok=True)
                if self.kind == "auto":
                    for other in KINDS:
                        if other != entry.kind:
                            self._path(kb, other).unlink(missing_ok=True)
                            self._path(kb, other).with_suffix(".tomb.json").unlink(missing_ok=True)
                entry.dirty = False

    # -- reads ---------------------------------------------------------------
    @metered("search")
    def search(self, kb: str, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Through the gate (``_Gate``): never beside an add to the same index, beside a flush or another
        search freely. An entry swapped out meanwhile is still whole: writes go to its successor."""
        q = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dim)
        entry = self._get(kb)  # before the gate: a writer holds the lock while it waits at the gate
        with self._gate.read():
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
            return entry.live()

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


_shown: set[tuple[str, Kind]] = set()


def _show_kind(kb: str, kind: Kind) -> None:
    """``ragvigil_vector_index_kind{kb,kind}``: 1 for the kind a KB's index is now, 0 for the other."""
    for k in KINDS:
        metrics.VECTOR_INDEX_KIND.labels(kb, k).set(1.0 if k == kind else 0.0)
        _shown.add((kb, k))
