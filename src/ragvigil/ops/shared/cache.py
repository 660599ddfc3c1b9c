"""The query-embedding cache's shared tier in Redis: a question one replica embedded, the others reuse.

Bounded on both sides: every value expires after ``cache_ttl_s`` and one larger than
``cache_max_bytes`` is not shared; ``clear`` deletes only this tier's keys (SCAN by prefix, in
batches) and bumps the tier's generation, a counter every replica reads at most every
``GENERATION_CHECK_S`` and empties its local cache on a change. Any failure answers ``None`` / does
nothing: the local cache and the embedder answer.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from ragvigil.ops.shared.link import RedisLink, RedisUnavailable

log = logging.getLogger(__name__)
CLEAR_BATCH = 500
MAX_CLEARED = 1_000_000  # a bound on one clear's work
GENERATION_CHECK_S = 1.0  # how stale a replica's view of another's clear may be (one GET per interval)


class RedisVectorCache:
    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self.ttl_s = link.settings.cache_ttl_s
        self.max_bytes = link.settings.cache_max_bytes
        self.prefix = link.key("qcache", "")
        self.generation_key = link.key("qcache_generation", "")  # outside ``prefix*``: a clear keeps it
        self.check_s = GENERATION_CHECK_S
        self._generation: int | None = None
        self._checked_at = float("-inf")
        self._gen_lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        try:
            return self.link.call("cache", lambda r: r.get(self.prefix + key))
        except RedisUnavailable:
            return None

    def put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with contextlib.suppress(RedisUnavailable):  # not shared this time: the local cache still holds it
            self.link.call("cache", lambda r: r.set(self.prefix + key, value, ex=self.ttl_s))

    def generation(self) -> int | None:
        """The number of clears any replica made (0 before the first); the last value read while Redis fails."""
        with self._gen_lock:
            now = time.monotonic()
            if now - self._checked_at < self.check_s:
                return self._generation
            self._checked_at = now
        try:
            raw = self.link.call("cache", lambda r: r.get(self.generation_key))
        except RedisUnavailable:
            return self._generation
        with self._gen_lock:
            self._generation = int(raw or 0)
            return self._generation

    def clear(self) -> int:
        """Delete every shared query vector and bump the generation, so every replica empties its local
        cache too; 0 (and a warning) when Redis cannot be reached."""

        def delete_all(r) -> int:  # type: ignore[no-untyped-def]
            deleted = 0
            batch: list[bytes] = []
            for name in r.scan_iter(match=self.prefix + "*", count=CLEAR_BATCH):
                batch.append(name)
                if len(batch) >= CLEAR_BATCH:
                    deleted += r.delete(*batch)
                    batch = []
                if deleted >= MAX_CLEARED:
                    break
            if batch:
                deleted += r.delete(*batch)
            r.incr(self.generation_key)
            return deleted

        try:
            return int(self.link.call("cache", delete_all))
        except RedisUnavailable as exc:
            log.warning("shared_cache_not_cleared", extra={"error": str(exc)})
            return 0
