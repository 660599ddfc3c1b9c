"""Where breaker transitions are published so that replicas learn from each other.

Why: with several replicas behind a load balancer, each one would otherwise have to fail its own
window of calls against a provider another replica already found dead. The router publishes every
transition and force of a breaker (``publish``) and, before calling a provider, reads what the
others published (``read``): a provider open on another replica, still inside its cool-down, or
forced open there, is skipped without a call. Reads must be cheap (the router asks on every
attempt), so a shared store answers from a local copy refreshed at most every ``breaker_cache_s``.

``MemoryBreakerStore`` (the default) keeps the records in process: one replica, or routers of the
same process sharing one store (tests). ``ops.shared.breakers.RedisBreakerStore`` shares them
through Redis; when Redis fails each replica decides alone and ``status()`` says so.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Protocol


@dataclass(frozen=True)
class BreakerRecord:
    """One provider's breaker as a replica last published it (wall-clock times, comparable across hosts)."""

    state: str  # closed | open | half_open
    opened_at: float | None
    forced: str | None  # open | closed | None (automatic)
    open_s: float
    replica: str
    at: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def skips(self, now: float) -> bool:
        """Whether a replica reading this record should skip the provider now."""
        if self.forced is not None:
            return self.forced == "open"
        return self.state == "open" and self.opened_at is not None and now - self.opened_at < self.open_s


class BreakerStateStore(Protocol):
    name: str

    def publish(self, provider: str, record: BreakerRecord) -> None:
        """Tell the other replicas; never raises (a store that fails leaves each replica alone)."""
        ...

    def read(self, provider: str) -> BreakerRecord | None:
        """The latest record of ``provider`` published by any replica; cheap, never raises."""
        ...

    def status(self) -> dict[str, object]: ...


class MemoryBreakerStore:
    name = "memory"

    def __init__(self) -> None:
        self._records: dict[str, BreakerRecord] = {}
        self._lock = threading.Lock()

    def publish(self, provider: str, record: BreakerRecord) -> None:
        with self._lock:
            self._records[provider] = record

    def read(self, provider: str) -> BreakerRecord | None:
        with self._lock:
            return self._records.get(provider)

    def status(self) -> dict[str, object]:
        return {"store": self.name, "shared": False}
