"""Answers to repeated questions, kept per knowledge-base version, so a popular question costs no search.

Why here and not in front of the pipeline: the checks that must see every message (history, the safety,
emotion and intent reading, safe mode) run before retrieval, and a turn they settle (a crisis) never
reaches the cache; the stages after generation (the output check, the hand-off, persisting) run for a
cached answer as for any other, so every turn is still stored and counted.

Only a turn whose answer cannot depend on the conversation is looked up: one with no history (no
follow-up resolution, no history in an LLM prompt). Only a clean answer is kept: a degraded turn (BM25
alone, a fallback generator, out of time) is answered afresh next time. The key holds the knowledge
base's version (``Catalog.version``: bumped whenever the view retrieval reads changes — ingest, delete,
quarantine, release — together with the vector count, which grows as the background filler embeds),
so a change answers from the new documents at once; the TTL bounds how long any answer is reused. One
cache per replica: each sees a change through its own catalog refresh.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace

from ragvigil.ops import metrics
from ragvigil.types import Generation, Hit, Retrieval

__all__ = ["AnswerCache", "CachedAnswer", "normalize_question"]

_HIT = metrics.ANSWER_CACHE_REQUESTS.labels("hit")
_MISS = metrics.ANSWER_CACHE_REQUESTS.labels("miss")
_BYPASS = metrics.ANSWER_CACHE_REQUESTS.labels("bypass")
_HIT_OVERHEAD = 256  # bytes a Hit costs beyond its strings (object, floats, list slot)


def normalize_question(text: str) -> str:
    """The question as the cache compares it: whitespace collapsed, nothing else (a different letter may
    embed differently, so it is a different question)."""
    return " ".join(text.split())


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """What a repeated question is answered with: its retrieval (without the query vector) and its generation."""

    retrieval: Retrieval
    generation: Generation
    passages: tuple[Hit, ...]  # the passages the generator was given, in citation order
    size: int  # estimated bytes
    stored_at: float


def _size(retrieval: Retrieval, generation: Generation, key: tuple[Hashable, ...]) -> int:
    hits = {id(h): h for h in retrieval.hits}
    strings = sum(
        len(h.text) + len(h.anchor) + len(h.title) + len(h.source) + len(h.document_id) for h in hits.values()
    )
    # a str of non-ASCII text costs up to 4 bytes a character: count 2 as a middle estimate
    return 2 * (strings + len(generation.text) + len(retrieval.query) + len(str(key))) + _HIT_OVERHEAD * len(hits)


class AnswerCache:
    """A bounded LRU (entries and bytes) with a TTL, keyed by (kb, kb version, question, language, generator).

    ``version(kb)`` is read at every lookup (it refreshes the catalog's view when due), so an entry of
    an older version is never found again; it ages out of the LRU.
    """

    def __init__(
        self,
        version: Callable[[str], Hashable],
        generator: str,
        max_entries: int = 2048,
        max_bytes: int = 16_000_000,
        ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        paused: Callable[[], bool] | None = None,
    ) -> None:
        self.version = version
        # while this says so (a fault injected for a drill), nothing is answered from or kept in the cache:
        # a drill must see the path it breaks, not an answer kept from before
        self.paused = paused or (lambda: False)
        self.generator = generator  # the generators in use: another provider list answers differently
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: OrderedDict[tuple[Hashable, ...], CachedAnswer] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def key(self, kb: str, question: str, language: str) -> tuple[Hashable, ...]:
        return (kb, self.version(kb), normalize_question(question), language, self.generator)

    def bypass(self) -> None:
        """Count a turn that may not be answered from the cache (it belongs to a conversation)."""
        _BYPASS.inc()

    def get(self, key: tuple[Hashable, ...]) -> CachedAnswer | None:
        """The answer kept under ``key`` (counted as a hit), or None (a miss); an expired one is dropped."""
        now = self.clock()
        with self._lock:
            found = self._entries.get(key)
            if found is not None and now - found.stored_at > self.ttl_s:
                self._drop(key)
                found = None
            if found is not None:
                self._entries.move_to_end(key)
        (_HIT if found is not None else _MISS).inc()
        return found

    def put(self, key: tuple[Hashable, ...], retrieval: Retrieval, generation: Generation, passages: list[Hit]) -> None:
        """Keep a clean answer; one larger than a quarter of the byte bound is not kept."""
        kept = replace(retrieval, query_vector=None, hits=list(retrieval.hits), warnings=list(retrieval.warnings))
        entry = CachedAnswer(kept, replace(generation), tuple(passages), _size(kept, generation, key), self.clock())
        if entry.size > self.max_bytes // 4:
            return
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = entry
            self._bytes += entry.size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def clear(self) -> int:
        """Forget every answer; returns how many there were."""
        with self._lock:
            n = len(self._entries)
            self._entries.clear()
            self._bytes = 0
        return n

    def _drop(self, key: tuple[Hashable, ...]) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.size
