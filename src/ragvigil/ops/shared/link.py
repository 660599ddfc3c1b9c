"""The one connection state to the shared Redis, for every use of it (rate limits, breakers, cache, health).

Why one object: when Redis dies, every use must find out at once and stop paying for it. After a
failure the link is *down*: calls fail at once (no network) until the next try is due, which backs
off from ``retry_initial_s`` to ``retry_max_s``; only one caller makes that try (the probe), and its
success brings every use back to Redis. The health check pings regardless, so ``/health`` tells the
truth even without traffic. Short socket timeouts and no client-side retries keep a dead Redis from
costing a turn more than one timeout, and usually nothing.

A ``redis`` fault (``ops.faults``) makes every call fail as a server that went away does
(``error``: connection refused; ``timeout``: the socket timeout passes, then ``TimeoutError``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ragvigil.config import RedisSettings
from ragvigil.ops import metrics

log = logging.getLogger(__name__)
T = TypeVar("T")
FAILURES = (redis.RedisError, OSError, TimeoutError)


class RedisUnavailable(Exception):
    """Redis failed or is backed off: the caller answers from its in-process state."""


class FaultSource:
    """What the link asks before each call (``ops.faults.FaultRegistry.hit``): a protocol, not an import."""

    def hit(self, target: str) -> Any: ...


class RedisLink:
    def __init__(
        self,
        settings: RedisSettings,
        faults: FaultSource | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        if settings.url is None:
            raise ValueError("RedisLink needs redis.url")
        self.url = settings.url.get_secret_value()
        parts = urlsplit(self.url)
        self.target = f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
        self.prefix = settings.prefix
        self.timeout_s = settings.socket_timeout_ms / 1000
        self.client = redis.Redis.from_url(self.url, **self.client_options(sync=True))
        self._faults = faults
        self._clock = clock
        self._lock = threading.Lock()
        self.up: bool | None = None  # None until the first call
        self.error: str | None = None
        self.down_since: float | None = None  # wall clock
        self.failures = 0
        self._backoff_s = 0.0
        self._next_try = 0.0
        metrics.REDIS_UP.labels(self.target).set(1)  # assumed up until a call fails: the alert needs a series

    def client_options(self, sync: bool) -> dict[str, Any]:
        """Options of a redis-py client (sync or ``redis.asyncio``): short timeouts, no retries of its own."""
        if sync:
            retry: Any = Retry(NoBackoff(), 0)
        else:
            from redis.asyncio.retry import Retry as AsyncRetry

            retry = AsyncRetry(NoBackoff(), 0)
        return {
            "socket_timeout": self.timeout_s,
            "socket_connect_timeout": self.settings.connect_timeout_ms / 1000,
            "retry": retry,
            "retry_on_timeout": False,
            "health_check_interval": 0,
        }

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # --- calls ------------------------------------------------------------------------------------
    def call(self, use: str, fn: Callable[[redis.Redis], T]) -> T:
        """``fn(client)`` unless the link is backed off; raises ``RedisUnavailable`` on any failure."""
        if not self._may_try():
            raise self._refused(use)
        try:
            self._strike()
            out = fn(self.client)
        except FAILURES as exc:
            raise self._broken(use, exc) from exc
        self._ok()
        return out

    async def acall(self, use: str, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()`` (an asyncio Redis call) under the same state as ``call``."""
        if not self._may_try():
            raise self._refused(use)
        try:
            fault = self._fault()
            if fault is not None and fault.kind == "timeout":
                await asyncio.sleep(self.timeout_s)  # the event loop keeps running, as a real timeout would
            if fault is not None:
                raise self._injected(fault)
            out = await fn()
        except FAILURES as exc:
            raise self._broken(use, exc) from exc
        self._ok()
        return out

    def _refused(self, use: str) -> RedisUnavailable:
        """A call not made: the link is backed off, and ``use`` falls back to its local state."""
        self._fallback(use)
        return RedisUnavailable(f"Redis is down ({self.error}); retrying later")

    def _broken(self, use: str, exc: BaseException) -> RedisUnavailable:
        """A call that failed: the link backs off, and ``use`` falls back to its local state."""
        self._failed(exc)
        self._fallback(use)
        return RedisUnavailable(f"Redis failed: {type(exc).__name__}: {exc}"[:300])

    def check(self) -> None:
        """The health check: a PING now, whatever the backoff (it is also the probe that brings Redis back)."""
        try:
            self._strike()
            self.client.ping()
        except FAILURES as exc:
            self._failed(exc)
            raise
        self._ok()

    # --- state ------------------------------------------------------------------------------------
    @property
    def shared(self) -> bool:
        """Whether the shared state is in use now (False while Redis is down: each replica decides alone)."""
        return self.up is not False

    def status(self) -> dict[str, object]:
        mode = "shared" if self.shared else "local"
        return {
            "target": self.target,
            "up": self.up,
            "error": self.error,
            "down_since": self.down_since,
            "failures": self.failures,
            "next_try_in_s": round(max(0.0, self._next_try - self._clock()), 3) if self.up is False else None,
            "limits": mode,
            "breakers": mode,
            "cache": mode,
        }

    def _may_try(self) -> bool:
        with self._lock:
            if self.up is not False:
                return True
            now = self._clock()
            if now < self._next_try:
                return False
            self._next_try = now + self._backoff_s  # this caller is the probe; the others keep falling back
            return True

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            was = self.up
            self.up = False
            self.failures += 1
            self.error = f"{type(exc).__name__}: {exc}"[:300]
            self._backoff_s = (
                self.settings.retry_initial_s
                if was is not False
                else min(self.settings.retry_max_s, max(self._backoff_s, self.settings.retry_initial_s) * 2)
            )
            self._next_try = self._clock() + self._backoff_s
            if was is not False:
                self.down_since = time.time()
        metrics.REDIS_UP.labels(self.target).set(0)
        if was is not False:
            log.error("redis_down", extra={"target": self.target, "error": self.error})

    def _ok(self) -> None:
        with self._lock:
            was = self.up
            self.up, self.error, self.down_since, self._backoff_s = True, None, None, 0.0
        metrics.REDIS_UP.labels(self.target).set(1)
        if was is False:
            log.warning("redis_recovered", extra={"target": self.target})

    def _fallback(self, use: str) -> None:
        metrics.REDIS_FALLBACKS.labels(use).inc()

    def _fault(self) -> Any:
        return self._faults.hit("redis") if self._faults is not None else None

    def _strike(self) -> None:
        fault = self._fault()
        if fault is None:
            return
        if fault.kind == "timeout":
            fault.wait(self.timeout_s)
        raise self._injected(fault)

    def _injected(self, fault: Any) -> redis.RedisError:
        """The error a dead server would give: a read timing out, or the connection refused."""
        if fault.kind == "timeout":
            return redis.TimeoutError(f"Timeout reading from {self.target} (injected fault {fault.id})")
        return redis.ConnectionError(f"Connection refused by {self.target} (injected fault {fault.id})")

    def close(self) -> None:
        self.client.close()
