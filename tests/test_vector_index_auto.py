"""``retrieval.vector_index=auto``: flat below the threshold, HNSW built in the background above it.

The build is held on an event so the test sees the store *during* it: searches answered by the
flat index, writes that must survive the swap. Small threshold (200 vectors), 16 dimensions.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from ragvigil.config import Settings
from ragvigil.knowledge.vectorstore import FaissVectorStore
from ragvigil.ops import metrics

DIM = 16
THRESHOLD = 200


def unit(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class GatedStore(FaissVectorStore):
    """The real store whose background builds wait for ``release`` (or raise ``fail``) after ``started``;
    ``built`` lists the kind of each build begun."""

    def __init__(self, root: Path, fail: bool = False, kind: str = "auto", compact_min: int = 1000) -> None:
        super().__init__(root, DIM, kind, auto_threshold=THRESHOLD, compact_min=compact_min)  # type: ignore[arg-type]
        self.started = threading.Event()
        self.release = threading.Event()
        self.fail = fail
        self.built: list[str] = []

    def _build_index(self, kind, ids: np.ndarray, vecs: np.ndarray):  # type: ignore[no-untyped-def]
        self.built.append(kind)
        self.started.set()
        assert self.release.wait(30), "the test never released the build"
        if self.fail:
            raise RuntimeError("build failed (test)")
        return super()._build_index(kind, ids, vecs)


def kind_gauge(kb: str, kind: str) -> float | None:
    return metrics.REGISTRY.get_sample_value("ragvigil_vector_index_kind", {"kb": kb, "kind": kind})


def rebuilds(outcome: str) -> float:
    return metrics.REGISTRY.get_sample_value("ragvigil_vector_index_rebuilds_total", {"outcome": outcome}) or 0.0


def top1(store: FaissVectorStore, kb: str, vec: np.ndarray) -> int:
    return store.search(kb, vec, 1)[0][0]


def test_auto_is_the_default_and_its_threshold_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().retrieval.vector_index == "auto"
    monkeypatch.setenv("RAGVIGIL_RETRIEVAL__VECTOR_INDEX_THRESHOLD", "1234")
    assert Settings().retrieval.vector_index_threshold == 1234


def test_below_the_threshold_stays_flat(tmp_path: Path) -> None:
    store = FaissVectorStore(tmp_path, DIM, "auto", auto_threshold=THRESHOLD)
    vecs = unit(THRESHOLD - 1, 0)
    store.upsert("small", list(range(1, THRESHOLD)), vecs)
    assert store.wait_rebuild("small", 5)
    assert store.kind_of("small") == "flat"
    assert kind_gauge("small", "flat") == 1.0 and kind_gauge("small", "hnsw") == 0.0
    store.delete("small", [3])  # a real delete: flat keeps no tombstone
    assert store.count("small") == THRESHOLD - 2 and 3 not in store.ids("small")


def test_crossing_builds_hnsw_in_the_background_and_keeps_writes_made_during_the_build(tmp_path: Path) -> None:
    store = GatedStore(tmp_path)
    base = unit(THRESHOLD + 100, 1)
    ok_before = rebuilds("ok")
    store.upsert("kb", list(range(1, 151)), base[:150])
    assert store.kind_of("kb") == "flat" and not store.started.is_set()
    store.upsert("kb", list(range(151, THRESHOLD + 1)), base[150:THRESHOLD])  # reaches the threshold
    assert store.started.wait(10), "no background build started at the threshold"

    # during the build: the flat index answers, exactly, and takes writes
    assert store.kind_of("kb") == "flat"
    assert kind_gauge("kb", "flat") == 1.0
    assert top1(store, "kb", base[41]) == 42
    store.upsert("kb", list(range(THRESHOLD + 1, THRESHOLD + 101)), base[THRESHOLD:])  # new ids 201..300
    store.delete("kb", list(range(5, 15)))  # ids of the snapshot
    replaced = unit(1, 99)
    store.upsert("kb", [20], replaced)  # an id of the snapshot with a new vector
    store.delete("kb", [250])  # an id added during the build
    assert top1(store, "kb", base[THRESHOLD + 10]) == THRESHOLD + 11  # flat serves the new ones at once
    store.flush()
    assert (tmp_path / "kb.flat.faiss").exists() and not (tmp_path / "kb.hnsw.faiss").exists()

    store.release.set()
    assert store.wait_rebuild("kb", 30)
    expected = set(range(1, THRESHOLD + 101)) - set(range(5, 15)) - {250}
    assert store.kind_of("kb") == "hnsw"
    assert store.ids("kb") == expected and store.count("kb") == len(expected)
    assert top1(store, "kb", replaced[0]) == 20
    for i in sorted(expected - {20}):
        assert top1(store, "kb", base[i - 1]) == i  # the exact vector finds itself after the swap
    assert kind_gauge("kb", "hnsw") == 1.0 and kind_gauge("kb", "flat") == 0.0
    assert rebuilds("ok") == ok_before + 1
    # the swap is on disk too: the HNSW file replaced the flat one
    assert (tmp_path / "kb.hnsw.faiss").exists() and not (tmp_path / "kb.flat.faiss").exists()

    reopened = FaissVectorStore(tmp_path, DIM, "auto", auto_threshold=THRESHOLD)
    assert reopened.kind_of("kb") == "hnsw"
    assert reopened.ids("kb") == expected
    assert top1(reopened, "kb", replaced[0]) == 20


def test_a_failed_build_keeps_the_flat_index_and_its_writes(tmp_path: Path) -> None:
    store = GatedStore(tmp_path, fail=True)
    base = unit(THRESHOLD + 10, 2)
    errors_before = rebuilds("error")
    store.upsert("kb", list(range(1, THRESHOLD + 1)), base[:THRESHOLD])
    assert store.started.wait(10)
    store.upsert("kb", list(range(THRESHOLD + 1, THRESHOLD + 11)), base[THRESHOLD:])
    store.release.set()
    assert store.wait_rebuild("kb", 30)
    assert store.kind_of("kb") == "flat"
    assert rebuilds("error") == errors_before + 1
    assert store.count("kb") == THRESHOLD + 10
    assert top1(store, "kb", base[THRESHOLD + 5]) == THRESHOLD + 6
    # no retry on the very next write (it waits REBUILD_RETRY_S), and nothing is left logging
    store.upsert("kb", [THRESHOLD + 11], unit(1, 3))
    assert store.wait_rebuild("kb", 1) and store.kind_of("kb") == "flat"
    assert store._get("kb").log is None


def test_a_large_flat_index_found_at_start_is_rebuilt(tmp_path: Path) -> None:
    """E.g. a crash during a build, or a switch from flat to auto: the restart builds HNSW."""
    vecs = unit(THRESHOLD + 50, 4)
    flat = FaissVectorStore(tmp_path, DIM, "flat")
    flat.upsert("kb", list(range(1, THRESHOLD + 51)), vecs)
    flat.flush()
    store = FaissVectorStore(tmp_path, DIM, "auto", auto_threshold=THRESHOLD)
    store.count("kb")  # the first read loads the index
    assert store.wait_rebuild("kb", 30)
    assert store.kind_of("kb") == "hnsw"
    assert all(top1(store, "kb", vecs[i - 1]) == i for i in range(1, THRESHOLD + 51))
    again = FaissVectorStore(tmp_path, DIM, "auto", auto_threshold=THRESHOLD)
    assert again.kind_of("kb") == "hnsw" and again.count("kb") == THRESHOLD + 50


def test_shrinking_below_half_the_threshold_returns_to_flat_in_the_background(tmp_path: Path) -> None:
    store = FaissVectorStore(tmp_path, DIM, "auto", auto_threshold=THRESHOLD)
    vecs = unit(THRESHOLD, 5)
    store.upsert("kb", list(range(1, THRESHOLD + 1)), vecs)
    assert store.wait_rebuild("kb", 30) and store.kind_of("kb") == "hnsw"
    store.delete("kb", list(range(1, 91)))  # 110 left: below the threshold, above half of it
    store.upsert("kb", [100], vecs[99:100])  # a re-upsert no longer rebuilds anything
    assert store.wait_rebuild("kb", 30)
    assert store.kind_of("kb") == "hnsw", "hysteresis: above half the threshold it stays HNSW"
    store.delete("kb", list(range(91, 111)))  # 90 left: below half
    assert store.wait_rebuild("kb", 30)
    assert store.kind_of("kb") == "flat"
    assert store.ids("kb") == set(range(111, THRESHOLD + 1))
    assert kind_gauge("kb", "flat") == 1.0
    store.delete("kb", [111])  # a real delete again
    assert store._get("kb").tombstones == set() and store.count("kb") == 89
    store.flush()
    assert (tmp_path / "kb.flat.faiss").exists() and not (tmp_path / "kb.hnsw.faiss").exists()
    assert FaissVectorStore(tmp_path, DIM, "auto", auto_threshold=THRESHOLD).kind_of("kb") == "flat"


@pytest.mark.parametrize("kind", ["hnsw", "auto"])
def test_a_reupsert_in_hnsw_replaces_the_vector_without_a_rebuild(tmp_path: Path, kind: str) -> None:
    """The old vector is relabelled and tombstoned in place: no compaction in the caller, none started."""
    store = GatedStore(tmp_path, kind=kind)
    store.release.set()
    base = unit(THRESHOLD + 20, 10)
    store.upsert("kb", list(range(1, THRESHOLD + 21)), base)
    assert store.wait_rebuild("kb", 30) and store.kind_of("kb") == "hnsw"
    builds = len(store.built)
    replaced = unit(2, 11)
    store.upsert("kb", [7, 8], replaced)
    store.upsert("kb", [7], replaced[1:])  # the same id twice: its first replacement goes too
    assert store.wait_rebuild("kb", 5) and len(store.built) == builds, "a re-upsert started a rebuild"
    assert store.count("kb") == THRESHOLD + 20 and store.ids("kb") == set(range(1, THRESHOLD + 21))
    for probe in (base[6], base[7], replaced[0]):
        assert {7, 8}.isdisjoint(i for i, s in store.search("kb", probe, 3) if s > 0.999)
    assert [i for i, _ in store.search("kb", replaced[1], 2)] == [7, 8] or top1(store, "kb", replaced[1]) in {7, 8}
    hits = store.search("kb", replaced[1], THRESHOLD + 20)
    assert [i for i, _ in hits].count(7) == 1 and len(hits) == len({i for i, _ in hits})
    store.flush()
    reopened = FaissVectorStore(tmp_path, DIM, kind, auto_threshold=THRESHOLD)  # type: ignore[arg-type]
    assert reopened.ids("kb") == set(range(1, THRESHOLD + 21)) and reopened.count("kb") == THRESHOLD + 20
    assert {i for i, s in reopened.search("kb", replaced[1], 2) if s > 0.999} == {7, 8}


@pytest.mark.parametrize("kind", ["hnsw", "auto"])
def test_compaction_runs_in_the_background_and_keeps_the_writes_made_during_it(tmp_path: Path, kind: str) -> None:
    store = GatedStore(tmp_path, kind=kind, compact_min=10)
    base = unit(THRESHOLD + 120, 12)
    store.release.set()
    store.upsert("kb", list(range(1, THRESHOLD + 101)), base[: THRESHOLD + 100])  # 300
    assert store.wait_rebuild("kb", 30) and store.kind_of("kb") == "hnsw"
    store.release.clear()
    store.started.clear()
    ok_before = rebuilds("ok")
    store.delete("kb", list(range(1, 81)))  # 80 tombstones > a quarter of 300: a compaction starts
    assert store.started.wait(10), "no background compaction started"
    assert store.built[-1] == "hnsw"

    # while the compaction is held: the old index answers (tombstones filtered) and takes writes
    old = store._get("kb")
    assert store.kind_of("kb") == "hnsw" and old.rebuild is not None
    assert top1(store, "kb", base[99]) == 100
    assert all(i > 80 for i, _ in store.search("kb", base[5], 10))
    store.upsert("kb", list(range(THRESHOLD + 101, THRESHOLD + 121)), base[THRESHOLD + 100 :])  # new 301..320
    replaced = unit(1, 13)
    store.upsert("kb", [150], replaced)  # an id of the snapshot, new vector
    store.delete("kb", [160, THRESHOLD + 110])  # one of the snapshot, one added during it
    store.upsert("kb", [40], base[39:40])  # a deleted id of the snapshot comes back
    assert top1(store, "kb", base[THRESHOLD + 104]) == THRESHOLD + 105
    assert top1(store, "kb", replaced[0]) == 150

    store.release.set()
    assert store.wait_rebuild("kb", 30)
    expected = (set(range(81, THRESHOLD + 121)) | {40}) - {160, THRESHOLD + 110}
    new = store._get("kb")
    assert new is not old and new.kind == "hnsw"
    assert store.ids("kb") == expected and store.count("kb") == len(expected)
    assert rebuilds("ok") == ok_before + 1
    # compacted: the snapshot's 80 tombstones are gone; the replayed delete of 160 and re-upsert of 150 left one each
    assert len(new.tombstones) == 2 and new.index.ntotal == len(expected) + 2
    assert top1(store, "kb", replaced[0]) == 150
    assert 160 not in {i for i, _ in store.search("kb", base[159], 10)}
    assert THRESHOLD + 110 not in {i for i, _ in store.search("kb", base[THRESHOLD + 109], 10)}
    for i in sorted(expected - {150}):
        assert top1(store, "kb", base[i - 1]) == i
    reopened = FaissVectorStore(tmp_path, DIM, kind, auto_threshold=THRESHOLD)  # type: ignore[arg-type]
    assert reopened.ids("kb") == expected and top1(reopened, "kb", replaced[0]) == 150


class BusyStore(GatedStore):
    """Writes keep arriving while the build catches up: each replay outside the lock lets ``extra`` more
    batches in (through the real ``upsert``, so they land in the served index and the log)."""

    def __init__(self, root: Path, extra: list[tuple[list[int], np.ndarray]]) -> None:
        super().__init__(root)
        self.extra = extra
        self.replays: list[tuple[int, bool]] = []  # (vectors replayed, under the lock)

    def _replay(self, entry, writes):  # type: ignore[no-untyped-def]
        locked = self._lock._is_owned()  # type: ignore[attr-defined]
        self.replays.append((sum(len(a) for a, _ in writes), locked))
        super()._replay(entry, writes)
        if not locked and self.extra:
            ids, vecs = self.extra.pop(0)
            self.upsert("kb", ids, vecs)


def test_a_backlog_that_keeps_growing_is_replayed_in_bounded_rounds_then_under_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ragvigil.knowledge.vectorstore as vs

    monkeypatch.setattr(vs, "SWAP_BACKLOG", 5)
    monkeypatch.setattr(vs, "REPLAY_ROUNDS", 3)
    base = unit(THRESHOLD + 200, 14)
    batches = [(list(range(a, a + 30)), base[a - 1 : a + 29]) for a in range(THRESHOLD + 31, THRESHOLD + 181, 30)]
    store = BusyStore(tmp_path, list(batches))
    store.upsert("kb", list(range(1, THRESHOLD + 1)), base[:THRESHOLD])
    assert store.started.wait(10)
    store.upsert("kb", list(range(THRESHOLD + 1, THRESHOLD + 31)), base[THRESHOLD : THRESHOLD + 30])
    store.release.set()
    assert store.wait_rebuild("kb", 30) and store.kind_of("kb") == "hnsw"
    outside = [n for n, locked in store.replays if not locked]
    under = [n for n, locked in store.replays if locked]
    assert outside == [30, 30, 30], "the catch-up outside the lock is bounded by REPLAY_ROUNDS"
    assert under == [30], "what was left after the rounds is replayed under the lock, once"
    assert store.ids("kb") == set(range(1, THRESHOLD + 121))
    for i in range(THRESHOLD + 1, THRESHOLD + 121):
        assert top1(store, "kb", base[i - 1]) == i
    assert [ids for ids, _ in store.extra] == [ids for ids, _ in batches[3:]]  # the swap did not wait for them


def test_a_small_backlog_swaps_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ragvigil.knowledge.vectorstore as vs

    monkeypatch.setattr(vs, "SWAP_BACKLOG", 5)
    base = unit(THRESHOLD + 40, 15)
    store = BusyStore(tmp_path, [([THRESHOLD + 31, THRESHOLD + 32], base[THRESHOLD + 30 : THRESHOLD + 32])])
    store.upsert("kb", list(range(1, THRESHOLD + 1)), base[:THRESHOLD])
    assert store.started.wait(10)
    store.upsert("kb", list(range(THRESHOLD + 1, THRESHOLD + 31)), base[THRESHOLD : THRESHOLD + 30])
    store.release.set()
    assert store.wait_rebuild("kb", 30) and store.kind_of("kb") == "hnsw"
    assert store.replays == [(30, False), (2, True)]  # one round, then the 2 left under the lock
    assert store.ids("kb") == set(range(1, THRESHOLD + 33))
    assert top1(store, "kb", base[THRESHOLD + 31]) == THRESHOLD + 32


def test_fixed_kinds_never_switch(tmp_path: Path) -> None:
    vecs = unit(THRESHOLD + 10, 6)
    for kind in ("flat", "hnsw"):
        store = FaissVectorStore(tmp_path / kind, DIM, kind, auto_threshold=THRESHOLD)  # type: ignore[arg-type]
        store.upsert("kb", list(range(1, THRESHOLD + 11)), vecs)
        assert store.wait_rebuild("kb", 5) and store.kind_of("kb") == kind


class HeldSearch:
    """Wraps a store's faiss index: its next ``search`` stops inside (after ``searching``) until ``release``."""

    def __init__(self, index) -> None:  # type: ignore[no-untyped-def]
        self._index = index
        self.searching = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._index, name)

    def search(self, q, k):  # type: ignore[no-untyped-def]
        self.searching.set()
        assert self.release.wait(30), "the test never released the search"
        return self._index.search(q, k)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "auto"])
def test_a_write_waits_for_a_search_in_progress_on_the_same_index(tmp_path: Path, kind: str) -> None:
    """faiss releases the GIL: an add running beside a search of the same index reallocates memory the
    search reads. The write waits for the search, then the next search finds what it wrote."""
    store = FaissVectorStore(tmp_path, DIM, kind, auto_threshold=THRESHOLD)  # type: ignore[arg-type]
    base = unit(60, 7)
    store.upsert("kb", list(range(1, 51)), base[:50])
    entry = store._get("kb")
    held = entry.index = HeldSearch(entry.index)
    found: list[int] = []
    searcher = threading.Thread(target=lambda: found.append(top1(store, "kb", base[10])), daemon=True)
    searcher.start()
    assert held.searching.wait(10)
    writer = threading.Thread(target=store.upsert, args=("kb", list(range(51, 61)), base[50:]), daemon=True)
    writer.start()
    writer.join(0.5)
    assert writer.is_alive(), "a write ran beside a search in progress on the same index"
    assert store_count_unlocked(entry) == 50  # nothing was added under the running search
    held.release.set()
    searcher.join(10)
    writer.join(10)
    assert found == [11]
    assert top1(store, "kb", base[55]) == 56 and store.count("kb") == 60


def store_count_unlocked(entry) -> int:  # type: ignore[no-untyped-def]
    """What the index holds now, read without the store's lock (the test's own view)."""
    return int(entry.index.ntotal)


def test_a_search_is_answered_while_a_flush_writes_the_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flush only reads the index: at 1M vectors it writes ~2 GB, and searches must not wait for it
    (the swap after a background build flushes too). Writes do wait for it."""
    import ragvigil.knowledge.vectorstore as vs

    store = FaissVectorStore(tmp_path, DIM, "auto", auto_threshold=THRESHOLD)
    base = unit(20, 8)
    store.upsert("kb", list(range(1, 21)), base)
    writing, release = threading.Event(), threading.Event()
    real_write = vs.faiss.write_index

    def held_write(index, path):  # type: ignore[no-untyped-def]
        writing.set()
        assert release.wait(30), "the test never released the flush"
        real_write(index, path)

    monkeypatch.setattr(vs.faiss, "write_index", held_write)
    flusher = threading.Thread(target=store.flush, daemon=True)
    flusher.start()
    assert writing.wait(10)
    found: list[int] = []
    searcher = threading.Thread(target=lambda: found.append(top1(store, "kb", base[3])), daemon=True)
    searcher.start()
    searcher.join(10)
    assert found == [4], "a search waited for a flush"
    writer = threading.Thread(target=store.upsert, args=("kb", [21], unit(1, 9)), daemon=True)
    writer.start()
    writer.join(0.5)
    assert writer.is_alive(), "a write ran while a flush was writing the index"
    release.set()
    flusher.join(10)
    writer.join(10)
    assert store.count("kb") == 21 and (tmp_path / "kb.flat.faiss").exists()


def test_an_hnsw_search_returns_k_live_hits_however_many_tombstones(tmp_path: Path) -> None:
    """Tombstones are skipped inside the search (a selector), not by asking for k + tombstones neighbours."""
    store = FaissVectorStore(tmp_path, DIM, "hnsw", compact_min=10_000)
    base = unit(400, 16)
    store.upsert("kb", list(range(1, 401)), base)
    store.delete("kb", list(range(1, 351)))  # 350 tombstones, below compact_min: no compaction
    assert store.wait_rebuild("kb", 5) and len(store._get("kb").tombstones) == 350
    for probe in (base[0], base[200], base[380]):
        hits = store.search("kb", probe, 10)
        assert len(hits) == 10 and all(i > 350 for i, _ in hits)
    assert top1(store, "kb", base[380]) == 381
    store.upsert("kb", [5], base[4:5])  # a change of the tombstones is seen by the next search
    assert top1(store, "kb", base[4]) == 5
