"""The leader lease as a Redis key: ``SET NX PX`` to take it, compare-and-set Lua scripts to renew or drop it.

Why compare-and-set: a holder that was paused past its lease may wake up after another replica took
the key; a plain ``PEXPIRE`` would then extend the *other* replica's lease on its behalf and a plain
``DEL`` would free it. The scripts act only while the key still holds this replica's id, atomically
on the server. Every call goes through the shared ``RedisLink`` (its short timeouts, its backoff, the
``redis`` fault): Redis down means no renewal, so the leader steps down within one lease.
"""

from __future__ import annotations

from typing import Any

from ragvigil.ops.shared.link import RedisLink

# taken when free, or kept when it is still this replica's (a holder that stepped down after a failed call
# while its key lived on takes it back at once instead of waiting out its own lease)
ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLease:
    """``Lease`` over one key, ``<prefix>leader``, whose value is the holder's replica id."""

    name = "redis"

    def __init__(self, link: RedisLink, replica: str, *, lease_s: float) -> None:
        self.link = link
        self.replica = replica
        self.key = link.key("leader")
        self.lease_ms = max(1, int(lease_s * 1000))
        self._acquire: Any = link.client.register_script(ACQUIRE)
        self._renew: Any = link.client.register_script(RENEW)
        self._release: Any = link.client.register_script(RELEASE)

    def acquire(self) -> bool:
        return bool(
            self.link.call(
                "leader", lambda c: self._acquire(keys=[self.key], args=[self.replica, self.lease_ms], client=c)
            )
        )

    def renew(self) -> bool:
        return bool(
            self.link.call(
                "leader", lambda c: self._renew(keys=[self.key], args=[self.replica, self.lease_ms], client=c)
            )
        )

    def release(self) -> None:
        self.link.call("leader", lambda c: self._release(keys=[self.key], args=[self.replica], client=c))

    def holder(self) -> str | None:
        value = self.link.call("leader", lambda c: c.get(self.key))
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def close(self) -> None:
        return None  # the link belongs to the runtime's shared state, which closes it
