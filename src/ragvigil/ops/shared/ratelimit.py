"""Rate-limit counters in Redis, shared by every replica: the ``limits`` library's async Redis storage.

Why async and per event loop: the admission middleware counts in the event loop, and a
``redis.asyncio`` connection pool belongs to the loop that opened it, so each loop gets its own
storage (a server has one; tests may run several). The window strategy is the memory backend's
(moving window), so a limit means the same in both modes. Every call goes through the
``RedisLink``: a failure raises ``RedisUnavailable`` and ``RateLimits`` counts that same request in
process instead.
"""

from __future__ import annotations

import asyncio
import threading

from limits import RateLimitItem
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from ragvigil.ops.shared.link import RedisLink


class RedisRateLimitBackend:
    name = "redis"

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._limiters: dict[int, tuple[asyncio.AbstractEventLoop, MovingWindowRateLimiter]] = {}
        self._lock = threading.Lock()

    def _limiter(self) -> MovingWindowRateLimiter:
        loop = asyncio.get_running_loop()
        with self._lock:
            found = self._limiters.get(id(loop))
            if found is None or found[0] is not loop:
                for key, (old, _) in list(self._limiters.items()):
                    if old.is_closed():
                        del self._limiters[key]
                storage = RedisStorage(
                    "async+" + self.link.url,
                    implementation="redispy",
                    key_prefix=self.link.key("limits"),
                    **self.link.client_options(sync=False),
                )
                found = (loop, MovingWindowRateLimiter(storage))
                self._limiters[id(loop)] = found
            return found[1]

    async def hit(self, item: RateLimitItem, *ids: str) -> bool:
        limiter = self._limiter()
        return await self.link.acall("rate_limit", lambda: limiter.hit(item, *ids))

    async def stats(self, item: RateLimitItem, *ids: str) -> tuple[float, int]:
        limiter = self._limiter()
        s = await self.link.acall("rate_limit", lambda: limiter.get_window_stats(item, *ids))
        return s.reset_time, s.remaining
