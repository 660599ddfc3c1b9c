"""State shared by the replicas of one service through Redis (scaled mode), with in-process fallbacks.

``build_shared(settings, faults)`` gives the runtime its ``SharedState`` (``rt.shared``): ``None``
parts without ``redis.url`` (embedded mode: everything stays in process). With Redis: the
rate-limit backend (``ops.admission``), the breaker store (``ProviderRouter.share``), the query
cache's shared tier (``CachedQueryEmbedder``) and the ``redis`` health check, all over one
``RedisLink`` whose state (up, or down and each replica deciding alone) they report together.

redis-py and limits' Redis storage (~9 MB of modules) are imported only when ``redis.url`` is set:
the embedded default never loads them (``RedisLink``/``RedisUnavailable`` stay importable from here).
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ragvigil.config import Settings

if TYPE_CHECKING:
    from ragvigil.ops.shared.breakers import RedisBreakerStore
    from ragvigil.ops.shared.cache import RedisVectorCache
    from ragvigil.ops.shared.link import FaultSource, RedisLink, RedisUnavailable
    from ragvigil.ops.shared.ratelimit import RedisRateLimitBackend

__all__ = ["RedisLink", "RedisUnavailable", "SharedState", "build_shared"]


@dataclass
class SharedState:
    """What a runtime shares with its replicas; every part ``None`` in embedded mode."""

    replica: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    link: RedisLink | None = None
    rate_limits: RedisRateLimitBackend | None = None
    cache: RedisVectorCache | None = None

    @property
    def enabled(self) -> bool:
        return self.link is not None

    def breaker_store(self, providers: list[str]) -> RedisBreakerStore | None:
        if self.link is None:
            return None
        from ragvigil.ops.shared.breakers import RedisBreakerStore

        return RedisBreakerStore(self.link, providers)

    def check(self) -> None:
        """The ``redis`` health check: optional (the service answers without it), degraded when failing."""
        if self.link is not None:
            self.link.check()

    def status(self) -> dict[str, object]:
        """For ``/health``: whether limits, breakers and the cache are shared or local now."""
        if self.link is None:
            return {"configured": False, "limits": "local", "breakers": "local", "cache": "local"}
        return {"configured": True, "replica": self.replica, **self.link.status()}

    def close(self) -> None:
        if self.link is not None:
            self.link.close()


def build_shared(settings: Settings, faults: FaultSource | None = None) -> SharedState:
    if not settings.redis.enabled:
        return SharedState()
    from ragvigil.ops.shared.cache import RedisVectorCache
    from ragvigil.ops.shared.link import RedisLink
    from ragvigil.ops.shared.ratelimit import RedisRateLimitBackend

    link = RedisLink(settings.redis, faults)
    return SharedState(link=link, rate_limits=RedisRateLimitBackend(link), cache=RedisVectorCache(link))


def __getattr__(name: str) -> Any:
    """``RedisLink`` and ``RedisUnavailable`` on first use, so importing this package loads no Redis client."""
    if name in ("RedisLink", "RedisUnavailable"):
        from ragvigil.ops.shared import link

        return getattr(link, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
