"""One replica leads, the others stand by: a lease acquired and renewed on a thread of its own.

Why a local deadline on top of the lease: a leader that is paused (a stop-the-world pause, a stuck
thread, a network partition) must stop believing it leads before another replica can take over. So
``is_leader()`` is true only until ``lease_s`` after the start of the last successful acquire or
renewal, whatever the backend says later; a renewal that fails, or finds the lease held by another
(the Redis compare-and-set), gives the leadership up at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ragvigil.ops import metrics
from ragvigil.ops.periodic import Periodic

log = logging.getLogger(__name__)


class Lease(Protocol):
    """A backend's lock: at most one holder at a time among the replicas that share it."""

    name: str

    def acquire(self) -> bool:
        """Take the lease if nobody holds it; True when this replica holds it now."""
        ...

    def renew(self) -> bool:
        """Extend the lease this replica holds; False when it no longer does (never extends another's)."""
        ...

    def release(self) -> None:
        """Give the lease up now (a standby may take it at its next try)."""
        ...

    def holder(self) -> str | None:
        """The replica holding the lease, as far as the backend says; None when nobody does."""
        ...

    def close(self) -> None: ...


class AlwaysLease:
    """No election (one instance, SQLite, ``leader.backend=none``): this replica always leads."""

    name = "none"

    def __init__(self, replica: str) -> None:
        self.replica = replica

    def acquire(self) -> bool:
        return True

    def renew(self) -> bool:
        return True

    def release(self) -> None:
        return None

    def holder(self) -> str | None:
        return self.replica

    def close(self) -> None:
        return None


class Leadership:
    """``is_leader()`` for the jobs done once per cluster; ``start``/``stop`` like every background job."""

    def __init__(
        self,
        lease: Lease,
        replica: str,
        *,
        lease_s: float,
        renew_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lease = lease
        self.replica = replica
        self.lease_s = lease_s
        self.renew_s = renew_s
        self._clock = clock
        self._lock = threading.Lock()
        self._held = False
        self._valid_until = 0.0
        self._since: float | None = None  # wall clock of the last gain
        self.error: str | None = None
        self.changes = 0
        self._listeners: list[Callable[[bool], None]] = []
        self._job = Periodic("leader-election", renew_s, self.tick)
        self._started = False
        metrics.LEADER.set(0)

    @property
    def backend(self) -> str:
        return self.lease.name

    def is_leader(self) -> bool:
        with self._lock:
            return self._held and self._clock() < self._valid_until

    def on_change(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(leading)`` on every gain and loss (on the election's thread: return quickly)."""
        self._listeners.append(listener)

    def tick(self) -> bool:
        """One step: renew the lease held, or try to take it; returns whether this replica leads now."""
        started = self._clock()
        with self._lock:
            held = self._held
        try:
            ok = self.lease.renew() if held else self.lease.acquire()
            error = None if ok or not held else "the lease is held by another replica or expired"
        except Exception as exc:  # any backend failure: not leading until a try succeeds
            ok, error = False, f"{type(exc).__name__}: {exc}"[:300]
        self._settle(ok, started, error)
        return self.is_leader()

    def _settle(self, ok: bool, started: float, error: str | None) -> None:
        with self._lock:
            was = self._held
            self._held = ok
            self._valid_until = started + self.lease_s if ok else 0.0
            if ok and not was:
                self._since = time.time()
            self.error = error if not ok else None
        if ok != was:
            self._changed(ok, error)

    def _changed(self, leading: bool, reason: str | None) -> None:
        self.changes += 1
        metrics.LEADER.set(1 if leading else 0)
        metrics.LEADER_CHANGES.labels("gained" if leading else "lost").inc()
        extra = {"replica": self.replica, "leader": leading, "backend": self.backend, "reason": reason}
        # a real election's changes are worth a warning; a lone instance's gain at start is not
        level = logging.INFO if self.backend == "none" else logging.WARNING
        log.log(level, "leadership_gained" if leading else "leadership_lost", extra=extra)
        for listener in self._listeners:
            try:
                listener(leading)
            except Exception:
                log.exception("leadership_listener_failed")

    def start(self) -> None:
        """Try once now (so the first jobs know where they stand), then renew or retry every ``renew_s``."""
        if self._started:
            return
        self._started = True
        self.tick()
        self._job.start()

    def stop(self) -> None:
        """Stop renewing and give the lease up, so a standby takes over at its next try, not a lease later."""
        self._job.stop()
        with self._lock:
            held = self._held
        if held:
            try:
                self.lease.release()
            except Exception as exc:
                log.warning("leadership_release_failed", extra={"error": str(exc)[:300]})
            self._settle(False, self._clock(), "stopped")
        self.lease.close()
        self._started = False

    def status(self) -> dict[str, object]:
        """For ``/health``: this replica, whether it leads, and who does as far as the backend says."""
        leading = self.is_leader()
        try:
            holder = self.replica if leading else self.lease.holder()
        except Exception as exc:
            holder = None
            self.error = self.error or f"{type(exc).__name__}: {exc}"[:300]
        return {
            "backend": self.backend,
            "replica": self.replica,
            "leader": leading,
            "leader_replica": holder,
            "since": self._since if leading else None,
            "lease_s": self.lease_s,
            "renew_s": self.renew_s,
            "error": self.error,
        }
