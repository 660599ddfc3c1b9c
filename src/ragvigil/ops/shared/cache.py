"""The query-embedding cache's shared tier in Redis: a question one replica embedded, the others reuse.

Bounded on both sides: every value expires after ``cache_ttl_s`` and one larger than
``cache_max_bytes`` is not shared; ``clear`` deletes only this tier's keys (SCAN by prefix, in
batches). Any failure answers ``None`` / does nothing: the local cache and the embedder answer.
"""

from __future__ import annotations

import contextlib
import logging

from ragvigil.ops.shared.link import RedisLink, RedisUnavailable

log = logging.getLogger(__name__)
CLEAR_BATCH = 500
MAX_CLEARED = 1_000_000  # a bound on one clear's work


class RedisVectorCache:
    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self.ttl_s = link.settings.cache_ttl_s
        self.max_bytes = link.settings.cache_max_bytes
        self.prefix = link.key("qcache", "")

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

    def clear(self) -> int:
        """Delete every shared query vector; 0 (and a warning) when Redis cannot be reached."""

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
            return deleted

        try:
            return int(self.link.call("cache", delete_all))
        except RedisUnavailable as exc:
            log.warning("shared_cache_not_cleared", extra={"error": str(exc)})
            return 0
