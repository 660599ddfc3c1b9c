"""The Redis group (only with ``redis.url``): reachable, PING latency, an eviction policy that keeps counters."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from ragvigil.config import Settings
from ragvigil.ops.doctor.options import DoctorOptions
from ragvigil.ops.doctor.result import CheckResult, fail, ok, skipped, warn

SLOW_PING_MS = 50.0  # a turn asks Redis a few times; past this the shared state costs more than it saves
# with one of these and a maxmemory set, Redis drops keys to make room, rate-limit windows included, and says nothing
EVICTING = frozenset(
    {"allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl"}
)


def describe_redis(url: str) -> str:
    """``redis at host:port/db`` (no password), or the socket path."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"redis at {parts.path}"
    return f"redis at {parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or '/0'}"


def check_redis(settings: Settings, options: DoctorOptions) -> list[CheckResult]:
    if not settings.redis.enabled:
        return [skipped("redis", "redis.url is empty: limits, breakers and the query cache stay in process")]
    import redis

    url = settings.redis.url.get_secret_value()  # type: ignore[union-attr]
    target = describe_redis(url)
    client = redis.Redis.from_url(
        url, socket_timeout=options.timeout_s, socket_connect_timeout=options.timeout_s, retry_on_timeout=False
    )
    try:
        try:
            client.ping()  # the first opens the connection; the second is what a turn pays
            start = time.perf_counter()
            client.ping()
            latency_ms = (time.perf_counter() - start) * 1000
        except redis.RedisError as exc:
            fix = f"start Redis at {target.removeprefix('redis at ')}, or correct redis.url (empty: no Redis)"
            return [fail("redis", f"{target} unreachable: {type(exc).__name__}: {exc}", fix)]
        rows = [ok("redis", f"{target} reachable, PING {latency_ms:.1f} ms")]
        if latency_ms > SLOW_PING_MS:
            rows = [warn("redis", f"{target} PING {latency_ms:.1f} ms", "run Redis next to the replicas")]
        rows.append(_eviction(client))
        return rows
    finally:
        client.close()


def _eviction(client: object) -> CheckResult:
    import redis

    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "")  # type: ignore[attr-defined]
        maxmemory = int(client.config_get("maxmemory").get("maxmemory", 0))  # type: ignore[attr-defined]
    except (redis.RedisError, ValueError) as exc:
        return warn(
            "redis.eviction",
            f"cannot read maxmemory-policy ({exc})",
            "make sure the server's policy is noeviction, or that it has no maxmemory",
        )
    if policy in EVICTING and maxmemory > 0:
        return warn(
            "redis.eviction",
            f"maxmemory-policy {policy} with maxmemory {maxmemory} bytes: when full, Redis silently drops "
            "keys, rate-limit windows included",
            "CONFIG SET maxmemory-policy noeviction (a refused write makes ragvigil decide locally, visibly)",
        )
    return ok("redis.eviction", f"maxmemory-policy {policy}, maxmemory {maxmemory or 'unlimited'}")
