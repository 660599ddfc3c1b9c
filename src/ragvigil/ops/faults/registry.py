"""The active injected faults: validated, bounded in number and time, each expiring by itself.

Why a registry and narrow hooks: a drill against a running instance needs faults that act where
real failures act (a provider call, a vector search, a SQL statement) and that cannot be left on by
accident. Every fault has a duration (at most ten minutes) and a timer removes it; the hooks ask
``hit(target)``, which is a single dict check while nothing is injected, so the hot path pays
nothing when no drill runs.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ragvigil.config import FaultSettings
from ragvigil.ops import metrics
from ragvigil.storage.models import new_id

log = logging.getLogger(__name__)

# the kinds each target understands (what a real failure of that component looks like)
KINDS: dict[str, tuple[str, ...]] = {
    "provider": ("error", "timeout", "slow", "malformed", "refuse"),
    "vector_store": ("error", "timeout", "slow", "refuse"),
    "embedding": ("error", "timeout", "slow"),
    "database": ("error", "timeout", "slow", "refuse"),
    "latency": ("slow",),
    "cpu": ("slow",),
    "redis": ("error", "timeout"),  # the shared Redis refuses connections, or stops answering
    # the safety check passes everything without a word (every verdict SAFE: the dangerous failure), or raises
    "safety": ("off", "error"),
}
MAX_DURATION_S = 600.0
DEFAULT_DELAY_S = {"slow": 2.0, "timeout": 5.0}
MAX_CPU_THREADS = 4

# set for requests of the fault API itself: an injected database or latency fault must never stop
# the operator from seeing or clearing it (the key check and the audit write go to the database)
exempt: ContextVar[bool] = ContextVar("ragvigil_fault_exempt", default=False)


class FaultsDisabled(Exception):
    """Fault injection is off (``faults.enabled``)."""


class FaultInvalid(ValueError):
    """A fault the registry cannot inject; ``field`` names the offending part of the request."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class TooManyFaults(Exception):
    """``faults.max_active`` faults are active already."""


class FaultNotFound(LookupError):
    pass


@dataclass
class Fault:
    """One injected fault. ``cleared`` wakes calls sleeping in it when it is removed."""

    target: str
    kind: str
    duration_s: float
    params: dict[str, Any]
    by: str
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    expires: float = 0.0  # time.monotonic() deadline
    cleared: threading.Event = field(default_factory=threading.Event)

    @property
    def delay_s(self) -> float:
        return float(self.params.get("delay_s", DEFAULT_DELAY_S.get(self.kind, 0.0)))

    @property
    def rate(self) -> float:
        return float(self.params.get("rate", 1.0))

    def live(self, now: float) -> bool:
        return not self.cleared.is_set() and now < self.expires

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the fault is cleared meanwhile."""
        if seconds > 0:
            self.cleared.wait(seconds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "target": self.target,
            "kind": self.kind,
            "duration_s": self.duration_s,
            "params": dict(self.params),
            "by": self.by,
            "created_at": self.created_at.isoformat(),
            "expires_at": (self.created_at + timedelta(seconds=self.duration_s)).isoformat(),
            "remaining_s": round(max(0.0, self.expires - time.monotonic()), 3),
        }


def family(target: str) -> str:
    """``provider:openai`` → ``provider``; other targets are their own family."""
    return target.split(":", 1)[0]


class FaultRegistry:
    """Inject, list and clear faults; ``hit(target)`` is what a hook asks on every call."""

    def __init__(self, settings: FaultSettings, on_expired: Callable[[Fault], None] | None = None) -> None:
        self.settings = settings
        self.enabled = settings.enabled
        self.providers: set[str] = set()  # provider names the hooks wrap: the valid provider:<name> targets
        self.on_expired = on_expired
        self._faults: dict[str, Fault] = {}
        self._timers: dict[str, threading.Timer] = {}
        self._lock = threading.Lock()

    # --- the hot path ----------------------------------------------------------------------------
    def hit(self, target: str) -> Fault | None:
        """The fault that applies to this call of ``target`` (its ``rate`` drawn), or None.

        An API request of the fault routes themselves is never hit.
        """
        if not self._faults or exempt.get():
            return None
        now = time.monotonic()
        for fault in list(self._faults.values()):
            if fault.target == target and fault.live(now) and (fault.rate >= 1.0 or random.random() < fault.rate):
                metrics.child(metrics.FAULT_HITS, target).inc()
                return fault
        return None

    # --- the operator's side ---------------------------------------------------------------------
    def inject(
        self, target: str, kind: str, duration_s: float, params: dict[str, Any] | None = None, by: str = "ragvigil"
    ) -> Fault:
        """Start a fault for ``duration_s`` seconds (1..600); raises FaultsDisabled, FaultInvalid, TooManyFaults."""
        if not self.enabled:
            raise FaultsDisabled("fault injection is disabled (set faults.enabled)")
        params = self._validate(target, kind, duration_s, dict(params or {}))
        fault = Fault(target, kind, float(duration_s), params, by)
        with self._lock:
            if len(self._faults) >= self.settings.max_active:
                raise TooManyFaults(f"{self.settings.max_active} faults are active already (faults.max_active)")
            fault.expires = time.monotonic() + fault.duration_s
            self._faults[fault.id] = fault
            timer = threading.Timer(fault.duration_s, self._expire, (fault.id,))
            timer.daemon = True
            timer.name = f"fault-expiry-{fault.id[:8]}"
            self._timers[fault.id] = timer
            timer.start()
            self._count(target)
        if target == "cpu":
            self._burn(fault)
        log.warning("fault_injected", extra={"fault": fault.to_dict()})
        return fault

    def list(self) -> list[Fault]:
        now = time.monotonic()
        with self._lock:
            return [f for f in self._faults.values() if f.live(now)]

    def clear(self, fault_id: str) -> Fault:
        """Remove one fault now; raises FaultNotFound."""
        fault = self._remove(fault_id)
        if fault is None:
            raise FaultNotFound(fault_id)
        log.warning("fault_cleared", extra={"fault_id": fault.id, "target": fault.target, "kind": fault.kind})
        return fault

    def clear_all(self) -> list[Fault]:
        with self._lock:
            ids = list(self._faults)
        cleared = [f for f in (self._remove(i) for i in ids) if f is not None]
        if cleared:
            log.warning("faults_cleared", extra={"fault_ids": [f.id for f in cleared]})
        return cleared

    def close(self) -> None:
        """Stop every fault (timers, CPU threads) without a word: the instance is stopping."""
        for fault_id in list(self._faults):
            self._remove(fault_id)

    # --- inside ----------------------------------------------------------------------------------
    def _validate(self, target: str, kind: str, duration_s: float, params: dict[str, Any]) -> dict[str, Any]:
        fam = family(target)
        if fam not in KINDS:
            raise FaultInvalid(
                "target", f"unknown target {target!r}: one of provider:<name>, {', '.join(list(KINDS)[1:])}"
            )
        if fam == "provider":
            name = target.split(":", 1)[1] if ":" in target else ""
            if name not in self.providers:
                known = ", ".join(sorted(self.providers)) or "none"
                raise FaultInvalid("target", f"no provider named {name!r} (known: {known})")
        elif ":" in target:
            raise FaultInvalid("target", f"{fam} takes no name")
        if kind not in KINDS[fam]:
            raise FaultInvalid("kind", f"{target} faults are of kind {', '.join(KINDS[fam])}, not {kind!r}")
        if not 1 <= duration_s <= MAX_DURATION_S:
            raise FaultInvalid("duration_s", f"duration_s must be between 1 and {MAX_DURATION_S:g} seconds")
        allowed = {"rate"} | ({"delay_s"} if kind in ("slow", "timeout") and fam != "cpu" else set())
        if fam == "cpu":
            allowed.add("threads")
        unknown = set(params) - allowed
        if unknown:
            raise FaultInvalid(
                f"params.{sorted(unknown)[0]}", f"{target} {kind} takes params {', '.join(sorted(allowed))} only"
            )
        out: dict[str, Any] = {}
        for name, value in params.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FaultInvalid(f"params.{name}", f"params.{name} must be a number")
            out[name] = value
        if "rate" in out and not 0 < out["rate"] <= 1:
            raise FaultInvalid("params.rate", "params.rate must be above 0 and at most 1")
        if "delay_s" in out and not 0 < out["delay_s"] <= self.settings.max_delay_s:
            raise FaultInvalid(
                "params.delay_s", f"params.delay_s must be above 0 and at most {self.settings.max_delay_s:g}"
            )
        if "threads" in out and (int(out["threads"]) != out["threads"] or not 1 <= out["threads"] <= MAX_CPU_THREADS):
            raise FaultInvalid("params.threads", f"params.threads must be a whole number from 1 to {MAX_CPU_THREADS}")
        if kind in ("slow", "timeout") and fam != "cpu":
            out.setdefault("delay_s", min(DEFAULT_DELAY_S[kind], self.settings.max_delay_s))
        return out

    def _remove(self, fault_id: str) -> Fault | None:
        with self._lock:
            fault = self._faults.pop(fault_id, None)
            timer = self._timers.pop(fault_id, None)
            if fault is not None:
                self._count(fault.target)
        if timer is not None:
            timer.cancel()
        if fault is not None:
            fault.cleared.set()  # wakes sleeping calls and stops CPU threads
        return fault

    def _expire(self, fault_id: str) -> None:
        fault = self._remove(fault_id)
        if fault is None:
            return
        log.warning("fault_expired", extra={"fault_id": fault.id, "target": fault.target, "kind": fault.kind})
        if self.on_expired is not None:
            try:
                self.on_expired(fault)
            except Exception as exc:  # the fault is gone either way; only its audit entry is missing
                log.warning("fault_expiry_audit_failed", extra={"fault_id": fault.id, "error": str(exc)})

    def _count(self, target: str) -> None:
        """Called with the lock held: the gauge of ``target`` follows the registry."""
        metrics.FAULTS_ACTIVE.labels(target).set(sum(1 for f in self._faults.values() if f.target == target))

    def _burn(self, fault: Fault) -> None:
        """CPU pressure: busy threads (they hold the GIL like real request work) until the fault ends."""

        busy = 0.05 * fault.rate  # of every 50 ms: ``rate`` is the share of time each thread spins

        def spin() -> None:
            while fault.live(time.monotonic()):
                until = time.monotonic() + busy
                while time.monotonic() < until:
                    sum(i * i for i in range(2_000))
                fault.wait(0.05 - busy)

        for n in range(int(fault.params.get("threads", 1))):
            threading.Thread(target=spin, name=f"fault-cpu-{fault.id[:8]}-{n}", daemon=True).start()
