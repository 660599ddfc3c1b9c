"""Per-key and per-user rate limits (the ``limits`` library, moving window).

Why a backend seam: in one process the counters live in memory (``limits``' memory storage, called
in the event loop: microseconds, no I/O); replicas share them through another store (Redis) behind
the same ``RateLimitBackend``. When that store fails, the limits fall back to in-process counters
for the same request and ``status()`` says so: a broken counter store must not fail every request.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)


class RateLimitBackend(Protocol):
    name: str

    async def hit(self, item: RateLimitItem, *ids: str) -> bool: ...

    async def stats(self, item: RateLimitItem, *ids: str) -> tuple[float, int]:
        """(reset time as Unix seconds, requests left in the window)."""
        ...


class MemoryBackend:
    """In-process counters: exact for one process, not shared."""

    name = "memory"

    def __init__(self) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    async def hit(self, item: RateLimitItem, *ids: str) -> bool:
        return self._limiter.hit(item, *ids)

    async def stats(self, item: RateLimitItem, *ids: str) -> tuple[float, int]:
        s = self._limiter.get_window_stats(item, *ids)
        return s.reset_time, s.remaining


@dataclass(frozen=True)
class RateDecision:
    """The outcome for one request, with the tightest limit it was measured against."""

    allowed: bool
    limit: int
    remaining: int
    reset_at: float
    window_s: int
    scope: str  # "key" or "user"

    def retry_after(self, now: float) -> int:
        return max(1, math.ceil(self.reset_at - now))

    def headers(self, now: float) -> list[tuple[bytes, bytes]]:
        """The IETF draft's ``RateLimit-*`` fields and the common ``X-RateLimit-*`` ones (reset as Unix time)."""
        reset_in = max(0, math.ceil(self.reset_at - now))
        pairs = [
            ("ratelimit-limit", str(self.limit)),
            ("ratelimit-remaining", str(max(0, self.remaining))),
            ("ratelimit-reset", str(reset_in)),
            ("ratelimit-policy", f"{self.limit};w={self.window_s}"),
            ("x-ratelimit-limit", str(self.limit)),
            ("x-ratelimit-remaining", str(max(0, self.remaining))),
            ("x-ratelimit-reset", str(math.ceil(self.reset_at))),
        ]
        if not self.allowed:
            pairs.append(("retry-after", str(self.retry_after(now))))
        return [(k.encode(), v.encode()) for k, v in pairs]


class RateLimits:
    def __init__(
        self,
        per_key: str | None,
        per_user: str | None,
        backend: RateLimitBackend | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.per_key = parse_many(per_key) if per_key else []
        self.per_user = parse_many(per_user) if per_user else []
        self.backend: RateLimitBackend = backend or MemoryBackend()
        self._fallback: MemoryBackend | None = None
        self.backend_error: str | None = None
        self._clock = clock

    @property
    def active(self) -> bool:
        return bool(self.per_key or self.per_user)

    async def check(self, key_id: str, user_id: str | None) -> RateDecision | None:
        """Count one request of ``key_id`` (and ``user_id`` of that key); None when no limit applies."""
        scopes: list[tuple[str, list[RateLimitItem], tuple[str, ...]]] = [("key", self.per_key, (key_id,))]
        if user_id:
            scopes.append(("user", self.per_user, (key_id, user_id)))
        tightest: RateDecision | None = None
        for scope, items, ids in scopes:
            for item in items:
                ok, reset_at, remaining = await self._hit(item, scope, ids)
                decision = RateDecision(ok, item.amount, remaining, reset_at, item.get_expiry(), scope)
                if not ok:
                    return decision
                if tightest is None or decision.remaining < tightest.remaining:
                    tightest = decision
        return tightest

    async def _hit(self, item: RateLimitItem, scope: str, ids: tuple[str, ...]) -> tuple[bool, float, int]:
        try:
            result = await _count(self.backend, item, scope, ids)
        except Exception as exc:
            if isinstance(self.backend, MemoryBackend):
                raise  # nothing to fall back to: a bug, not an outage
            if self.backend_error is None:
                log.error("rate_limit_store_failed", extra={"backend": self.backend.name, "error": str(exc)[:300]})
            self.backend_error = f"{type(exc).__name__}: {exc}"[:300]
            if self._fallback is None:
                self._fallback = MemoryBackend()
            return await _count(self._fallback, item, scope, ids)
        self.backend_error = None
        return result

    def status(self) -> dict[str, object]:
        return {
            "per_key": [str(i) for i in self.per_key],
            "per_user": [str(i) for i in self.per_user],
            "backend": self.backend.name,
            "backend_error": self.backend_error,  # set while the shared store fails and memory counts instead
            # where this instance's counters are now: shared across replicas, or in process (no store, or it fails)
            "counting": "local" if self.backend_error or isinstance(self.backend, MemoryBackend) else "shared",
        }


async def _count(
    backend: RateLimitBackend, item: RateLimitItem, scope: str, ids: tuple[str, ...]
) -> tuple[bool, float, int]:
    ok = await backend.hit(item, scope, *ids)
    reset_at, remaining = await backend.stats(item, scope, *ids)
    return ok, reset_at, remaining
