"""Vector stores behind one small interface; the embedded default is faiss on local disk.

One index per knowledge base, ids are chunk ids. ``flat`` is exact inner product and
supports real deletes; ``hnsw`` is approximate and fast at 100k+ vectors, deletes are
tombstones, and a re-upserted id gets its new vector added while the old one is relabelled
with a unique negative id and tombstoned (the graph keeps it for navigation, no search returns
it), so no write ever rebuilds the index in the caller. ``auto`` chooses per knowledge base by
size: flat below a threshold (exact, and fast enough there), HNSW from it on.

Every rebuild runs in the background, the same way: flat → HNSW when a KB crosses the
threshold, HNSW → HNSW (a compaction) once tombstones pass a quarter of the index, HNSW → flat
once an ``auto`` KB falls below half the threshold (the gap keeps a KB at the edge from
flapping). A snapshot of the live vectors is taken under the lock, the new index is built from
it outside the lock while the old one keeps answering (tombstoned ids filtered) and taking
writes; those writes are logged and replayed onto the new index outside the lock, round after
round, until at most ``SWAP_BACKLOG`` remain, which are replayed under the lock just before the
one swap. Writes mark the index dirty; ``flush`` persists atomically (temp file + rename) so a
crash leaves the previous index, and the ingest service re-embeds whatever the index lacks.
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
# an ``auto`` HNSW index is rebuilt as flat in the background once it holds less than this share of the threshold
SHRINK_SHARE = 0.5
# a failed background build is tried again after this many seconds (not on every upsert)
REBUILD_RETRY_S = 60.0
# an HNSW index is compacted in the background once its tombstones pass this share of it
COMPACT_SHARE = 0.25
# the swap replays at most this many logged vectors under the lock; more are replayed outside it first
SWAP_BACKLOG = 2_000
# rounds of replay outside the lock; a backlog that still exceeds SWAP_BACKLOG after them (writes
# arriving faster than the new index takes them) is replayed under the lock, so writers wait for it
REPLAY_ROUNDS = 4

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
        # while a background rebuild runs: every write since its snapshot, replayed before the swap
        self.log: list[tuple[np.ndarray, np.ndarray | None]] | None = None
        self.rebuild: threading.Thread | None = None
        self.retry_after = 0.0
        # search parameters excluding the tombstones (HNSW), made by the first search after a change
        self._filter: tuple[int, Any, Any] | None = None
        self.tomb_version = 0  # bumped by every change of ``tombstones`` (under the write gate)

    def live(self) -> int:
        return len(self.stored) - len(self.tombstones)

    def search_params(self) -> Any | None:
        """faiss parameters that skip tombstoned ids inside the search, so k results come back however many
        tombstones there are (asking for k + tombstones neighbours would make an HNSW search scan them all).

        The selector is built once per change of the tombstones and shared; the parameters are new for
        every search, because faiss's id map swaps its own selector into them for the call's duration."""
        if not self.tombstones:
            return None
        cached = self._filter
        if cached is None or cached[0] != self.tomb_version:
            version = self.tomb_version
            batch = faiss.IDSelectorBatch(np.fromiter(self.tombstones, np.int64, len(self.tombstones)))
            cached = self._filter = (version, faiss.IDSelectorNot(batch), batch)  # ``batch`` outlives ``not``
        return faiss.SearchParametersHNSW(sel=cached[1], efSearch=faiss.downcast_index(self.index.index).hnsw.efSearch)


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
        compact_min: int = 1000,
    ) -> None:
        self.root = root
        self.dim = dim
        self.kind = kind
        self.hnsw_m = hnsw_m
        self.auto_threshold = auto_threshold
        self.compact_min = compact_min  # fewer tombstones than this never start a compaction
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
            self._maybe_rebuild(kb, entry)

    def _write(self, entry: _KbIndex, arr: np.ndarray, vecs: np.ndarray) -> None:
        present = entry.stored.intersection(arr.tolist())
        if present:
            if entry.kind == "flat":
                entry.index.remove_ids(np.asarray(sorted(present), dtype=np.int64))
                entry.stored.difference_update(present)
            else:
                self._relabel(entry, present)  # HNSW cannot drop a vector: the old one stops answering to its id
        entry.index.add_with_ids(vecs, arr)
        entry.stored.update(arr.tolist())
        if entry.tombstones.intersection(arr.tolist()):
            entry.tombstones.difference_update(arr.tolist())
            entry.tomb_version += 1
        entry.dirty = True

    @staticmethod
    def _relabel(entry: _KbIndex, ids: set[int]) -> None:
        """Give each stored vector of ``ids`` in an HNSW index a unique negative id (``-2 - position``) and
        tombstone it: the id is free for its new vector, the old one is never returned and goes at the next
        compaction. Saved as it is (the id map and the tombstone file), so a reopened index agrees."""
        idmap = entry.index.id_map
        view = faiss.rev_swig_ptr(idmap.data(), idmap.size())  # the id map itself, not a copy
        pos = np.flatnonzero(np.isin(view, np.fromiter(ids, np.int64, len(ids))))
        dead = (-2 - pos).astype(np.int64)
        view[pos] = dead
        entry.stored.difference_update(ids)
        entry.tombstones.difference_update(ids)
        entry.stored.update(dead.tolist())
        entry.tombstones.update(dead.tolist())
        entry.tomb_version += 1

    def _remove(self, entry: _KbIndex, arr: np.ndarray) -> None:
        present = entry.stored.intersection(arr.tolist())
        if not present:
            return
        if entry.kind == "flat":
            entry.index.remove_ids(np.asarray(sorted(present), dtype=np.int64))
            entry.stored.difference_update(present)
        else:
            entry.tombstones.update(present)
            entry.tomb_version += 1
        entry.dirty = True

    # -- background rebuilds -------------------------------------------------
    def _target(self, entry: _KbIndex) -> Kind | None:
        """The kind a background rebuild should make of this index now, or None when it needs none."""
        live = entry.live()
        if entry.kind == "flat":
            return "hnsw" if self.kind == "auto" and live >= self.auto_threshold else None
        if self.kind == "auto" and live < self.auto_threshold * SHRINK_SHARE:
            return "flat"
        if len(entry.tombstones) > max(self.compact_min, int(entry.index.ntotal * COMPACT_SHARE)):
            return "hnsw"
        return None

    def _maybe_rebuild(self, kb: str, entry: _KbIndex) -> None:
        """Start the background rebuild an index needs (caller holds the lock): one at a time per KB."""
        target = None if entry.rebuild is not None or time.monotonic() < entry.retry_after else self._target(entry)
        if target is None:
            _show_kind(kb, entry.kind)
            return
        ids, vecs = self._snapshot(entry)
        entry.log = []
        entry.rebuild = threading.Thread(
            target=self._rebuild,
            args=(kb, entry, target, ids, vecs),
            name=f"{target}-rebuild-{kb}",
            daemon=True,
        )
        entry.rebuild.start()

    @staticmethod
    def _snapshot(entry: _KbIndex) -> tuple[np.ndarray, np.ndarray]:
        """Every live vector with its id, read by position from the index's own storage: one copy, of the
        live rows only (at 1M vectors that copy is 1.5 GB: the only one the build holds besides its index).

        Under the lock, so no write changes the index meanwhile; searches may run beside it (both read)."""
        n = int(entry.index.ntotal)
        if not n:
            return np.empty(0, np.int64), np.empty((0, entry.index.d), np.float32)
        ids = faiss.vector_to_array(entry.index.id_map).astype(np.int64)
        inner = faiss.downcast_index(entry.index.index)
        flat = faiss.downcast_index(inner.storage) if hasattr(inner, "storage") else inner  # HNSW keeps them there
        rows = faiss.rev_swig_ptr(flat.get_xb(), n * entry.index.d).reshape(n, entry.index.d)  # a view, no copy
        if not entry.tombstones:
            return ids, np.array(rows, dtype=np.float32)
        keep = ~np.isin(ids, np.fromiter(entry.tombstones, np.int64, len(entry.tombstones)))
        return ids[keep], np.ascontiguousarray(rows[keep], dtype=np.float32)

    def _build_index(self, kind: Kind, ids: np.ndarray, vecs: np.ndarray) -> faiss.Index:
        """The slow part, outside the lock (faiss releases the GIL while it adds)."""
        index = self._new_index(kind)
        for start in range(0, len(ids), 10_000):
            index.add_with_ids(vecs[start : start + 10_000], ids[start : start + 10_000])
        return index

    def _replay(self, entry: _KbIndex, writes: list[tuple[np.ndarray, np.ndarray | None]]) -> None:
        """Apply logged writes in order, collapsed to the last one per id."""
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

    def _catch_up(self, new: _KbIndex, entry: _KbIndex) -> None:
        """Replay the writes logged since the snapshot onto ``new`` outside the lock, round after round,
        until at most ``SWAP_BACKLOG`` vectors wait (what the swap replays under the lock) or
        ``REPLAY_ROUNDS`` ran (writes outpacing the new index: the swap then holds writers back while it
        replays the rest, so the backlog cannot keep growing)."""
        for _ in range(REPLAY_ROUNDS):
            with self._lock:
                writes, entry.log = (entry.log or []), []
            if not writes:
                return
            self._replay(new, writes)
            with self._lock:
                if _logged(entry.log) <= SWAP_BACKLOG:
                    return

    def _rebuild(self, kb: str, entry: _KbIndex, kind: Kind, ids: np.ndarray, vecs: np.ndarray) -> None:
        outcome = "error"
        try:
            new = _KbIndex(self._build_index(kind, ids, vecs), set(), kind)
            self._catch_up(new, entry)
            with self._lock:
                if self._indexes.get(kb) is not entry:
                    outcome = "abandoned"  # the KB was dropped meanwhile
                    return
                self._replay(new, entry.log or [])
                new.dirty = True
                self._indexes[kb] = new
                entry.log = None  # the old entry takes no more writes
                _show_kind(kb, new.kind)
                self.flush()  # the new kind's file by temp name + rename, then the old kind's file goes
                self._maybe_rebuild(kb, new)  # e.g. deletes replayed past the compaction share
            outcome = "ok"
            log.info(
                "vector_index_rebuilt", extra={"kb": kb, "from": entry.kind, "kind": new.kind, "vectors": new.live()}
            )
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
        """Wait for the background rebuilds of ``kb`` (one swap may start the next); True when none runs any more."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                thread = self._get(kb).rebuild
            if thread is None:
                return True
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                return False

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
            params = entry.search_params()
            want = min(k, entry.index.ntotal)
            if params is None:
                scores, ids = entry.index.search(q, want)
            else:
                scores, ids = entry.index.search(q, want, params=params)
            tombs = entry.tombstones
            out = [(int(i), float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0 and int(i) not in tombs]
        return out[:k]

    def ids(self, kb: str) -> set[int]:
        with self._lock:
            entry = self._get(kb)
            return entry.stored - entry.tombstones

    def count(self, kb: str) -> int:
        """Without the lock (two set sizes): each turn reads it for the answer cache, and must not wait for a
        flush or a swap."""
        return self._get(kb).live()

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


def _logged(writes: list[tuple[np.ndarray, np.ndarray | None]] | None) -> int:
    """How many vectors (or deletes) a rebuild's log holds."""
    return sum(len(arr) for arr, _ in writes or [])


_shown: set[tuple[str, Kind]] = set()


def _show_kind(kb: str, kind: Kind) -> None:
    """``ragvigil_vector_index_kind{kb,kind}``: 1 for the kind a KB's index is now, 0 for the other."""
    for k in KINDS:
        metrics.VECTOR_INDEX_KIND.labels(kb, k).set(1.0 if k == kind else 0.0)
        _shown.add((kb, k))
