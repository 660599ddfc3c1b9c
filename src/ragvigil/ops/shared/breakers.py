"""Breaker records in Redis, so a provider one replica found dead is skipped by all of them.

Why a local copy: the router reads a provider's record before every attempt; all records are
fetched with one ``MGET`` at most every ``breaker_cache_s`` and served from memory in between, so a
turn pays at most one Redis round trip a second per process (none while Redis is down: the link
fails at once). Keys expire (an open record soon after its cool-down, others within a day), so a
record can never outlive the state it describes by long. A record that could not be written while
Redis was down is written with the first refresh that reaches Redis again, so the other replicas
learn what this one found meanwhile.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

from ragvigil.ops.shared.link import RedisLink, RedisUnavailable
from ragvigil.providers.breaker_store import BreakerRecord

log = logging.getLogger(__name__)
FORCED_TTL_S = 86_400
MIN_TTL_S = 60


class RedisBreakerStore:
    name = "redis"

    def __init__(self, link: RedisLink, providers: list[str], clock: Callable[[], float] = time.monotonic) -> None:
        self.link = link
        self.providers = list(providers)
        self.cache_s = link.settings.breaker_cache_s
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, BreakerRecord] = {}
        self._fetched_at: float | None = None
        self._refreshing = False
        self._unsent: dict[str, BreakerRecord] = {}  # published while Redis was down

    def _key(self, provider: str) -> str:
        return self.link.key("breaker", provider)

    def publish(self, provider: str, record: BreakerRecord) -> None:
        with self._lock:
            self._records[provider] = record
            self._unsent.pop(provider, None)
        try:
            self.link.call("breaker", lambda r: self._write(r, provider, record))
        except RedisUnavailable as exc:
            with self._lock:
                self._unsent[provider] = record
            log.warning("breaker_state_not_shared", extra={"provider": provider, "error": str(exc)})

    def _write(self, r, provider: str, record: BreakerRecord) -> None:  # type: ignore[no-untyped-def]
        ttl = FORCED_TTL_S if record.forced is not None else max(MIN_TTL_S, int(record.open_s * 2) + 1)
        r.set(self._key(provider), json.dumps(record.to_dict()), ex=ttl)

    def read(self, provider: str) -> BreakerRecord | None:
        self._refresh()
        with self._lock:
            return self._records.get(provider)

    def _refresh(self) -> None:
        now = self._clock()
        with self._lock:
            if self._refreshing or (self._fetched_at is not None and now - self._fetched_at < self.cache_s):
                return
            self._refreshing = True  # one reader refreshes; the others use the copy meanwhile
        with self._lock:
            unsent, self._unsent = self._unsent, {}
        try:
            raw = self.link.call("breaker", lambda r: self._sync(r, unsent))
        except RedisUnavailable:
            raw = None
            with self._lock:
                self._unsent = unsent | self._unsent  # newer ones published meanwhile win
        with self._lock:
            self._refreshing = False
            self._fetched_at = self._clock()
            if raw is None:
                return  # keep the last copy: each record still expires by its own times
            for provider, value in zip(self.providers, raw, strict=True):
                record = _parse(value)
                if record is not None:
                    self._records[provider] = record
                else:  # expired or never published: nothing to follow
                    self._records.pop(provider, None)

    def _sync(self, r, unsent: dict[str, BreakerRecord]) -> list:  # type: ignore[no-untyped-def, type-arg]
        for provider, record in unsent.items():
            self._write(r, provider, record)
        return r.mget([self._key(p) for p in self.providers])

    def status(self) -> dict[str, object]:
        return {"store": self.name, "shared": self.link.shared, "error": None if self.link.shared else self.link.error}


def _parse(value: bytes | None) -> BreakerRecord | None:
    if value is None:
        return None
    try:
        d = json.loads(value)
        return BreakerRecord(
            str(d["state"]),
            None if d.get("opened_at") is None else float(d["opened_at"]),
            d.get("forced") if d.get("forced") in ("open", "closed") else None,
            float(d["open_s"]),
            str(d["replica"]),
            float(d["at"]),
        )
    except (ValueError, KeyError, TypeError):
        log.warning("breaker_record_unreadable", extra={"value": repr(value)[:200]})
        return None
