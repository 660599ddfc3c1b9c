"""Admission of one instance: rate limits, the adaptive concurrency gate with priorities, feature shedding.

Why one object: the middleware, the ops API (``GET /api/v1/ops/admission``), remediation actions and
drills all need the same few calls (classify, admit, release, status), and the pieces' state must be
read together to mean anything (a limit without its queue and in-flight count says little).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from ragvigil.config import AdmissionSettings
from ragvigil.ops import metrics
from ragvigil.ops.admission.features import FeatureFlags
from ragvigil.ops.admission.limiter import GradientLimiter
from ragvigil.ops.admission.pressure import PressureMonitor
from ragvigil.ops.admission.priority import CrisisCheck, Priority, phrase_check
from ragvigil.ops.admission.queue import Permit, PriorityGate, Shed
from ragvigil.ops.admission.ratelimit import RateLimitBackend, RateLimits
from ragvigil.ops.admission.sizing import QueueSizing

# why a request is shed (``Shed.reason``); LoadShedding reads rate(ragvigil_admission_shed_total), and
# a series born at its first shed reads as no increase, so a short burst would never fire the alert
SHED_REASONS = ("queue_full", "displaced", "predicted_wait", "timeout")

log = logging.getLogger(__name__)

DEFAULT_TURN_BUDGET_S = 60.0  # what a turn gets without a configured budget (``chat.build.turn_budget_s``)
TICK_S = 1.0  # how often pressure is looked at without traffic (features come back while it is quiet)


class Admission:
    def __init__(
        self,
        settings: AdmissionSettings,
        features: FeatureFlags,
        crisis: CrisisCheck | None = None,
        clock: Callable[[], float] = time.monotonic,
        rate_backend: RateLimitBackend | None = None,
        turn_budget_s: float = DEFAULT_TURN_BUDGET_S,
    ) -> None:
        """``rate_backend``: where the rate-limit counters live (memory by default; Redis shares them);
        ``turn_budget_s``: a turn's time budget, which the queue's wait and size follow (``sizing``)."""
        self.settings = settings
        self.enabled = settings.enabled
        self.features = features
        self.crisis = crisis or phrase_check()
        self.vip_prefixes = tuple(settings.vip_keys)
        self.clock = clock
        self.limiter = GradientLimiter(
            settings.initial_limit,
            settings.min_limit,
            settings.max_limit,
            window_s=settings.limit_window_s,
            cpu_clock=time.process_time if settings.cpu_saturation > 0 else None,
            cpu_saturation=settings.cpu_saturation,
        )
        self.sizing = QueueSizing(
            turn_budget_s,
            settings.queue_wait_share,
            settings.max_queue,
            limit=lambda: self.limiter.limit,
            service_s=lambda: self.limiter.short_rtt,
            drain_per_s=self.limiter.drain_per_s,
            fixed_size=settings.queue_size,
            fixed_wait_s=settings.queue_timeout_s,
        )
        size, wait = self.sizing()
        self.gate = PriorityGate(self.limiter, size, wait, clock, self._count_shed, self.tick, sizing=self.sizing)
        self.rates = RateLimits(settings.per_key, settings.per_user, rate_backend)
        self.pressure = PressureMonitor(features, settings.shed_features_after_s, settings.restore_features_after_s)
        self.shed_counts: Counter[str] = Counter()
        for priority in Priority:  # every series exists at 0: a first burst's sheds are an increase rate() sees
            for reason in SHED_REASONS:
                metrics.ADMISSION_SHED.labels(priority.name, reason)
        self.admitted: Counter[str] = Counter()
        self.rate_limited: Counter[str] = Counter()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self.closers: list[Callable[[], None]] = []

    # --- the request path ---------------------------------------------------------------------
    def priority_of(self, text: str | None, key: str | None, background: bool = False) -> Priority:
        """Crisis (by the message), then VIP (by the key's prefix), then background work, then normal."""
        if text and self.crisis(text):
            return Priority.crisis
        if key and self.vip_prefixes and key.startswith(self.vip_prefixes):
            return Priority.vip
        return Priority.background if background else Priority.normal

    async def admit(self, priority: Priority, sampled: bool = True, waited_s: float = 0.0) -> Permit:
        """A slot for one request; raises ``Shed`` (→ 503 overloaded). ``waited_s``: how long it already
        waited inside the server before asking (see ``PriorityGate.acquire``)."""
        self._ensure_ticker()
        permit = await self.gate.acquire(priority, sampled, waited_s)
        self.admitted[priority.name] += 1
        metrics.ADMISSION_ADMITTED.labels(priority.name).inc()
        return permit

    def release(self, permit: Permit) -> None:
        self.gate.release(permit)

    def refuse_early(self, priority: Priority, waited_s: float = 0.0) -> Shed | None:
        """The refusal ``admit`` would raise at once for this request (counted as such), or ``None``
        when it could start or queue. For a refusal made before the app's middleware (``api.admission``)."""
        if not self.enabled or not self.gate.would_shed(priority, waited_s):
            return None
        exc = Shed("predicted_wait", priority)
        self._count_shed(exc)
        return exc

    def retry_after_s(self) -> int:
        """What a shed request is told: about one request's time, at least a second."""
        return max(1, min(30, round(self.limiter.short_rtt * 2) or 1))

    def count_rate_limited(self, scope: str) -> None:
        self.rate_limited[scope] += 1
        metrics.ADMISSION_RATE_LIMITED.labels(scope).inc()

    def _count_shed(self, exc: Shed) -> None:
        self.shed_counts[exc.reason] += 1
        metrics.ADMISSION_SHED.labels(exc.priority.name, exc.reason).inc()
        self.tick()  # a shed request is pressure even when the queue is momentarily empty
        if exc.priority is Priority.crisis:
            log.error("crisis_turn_shed", extra={"reason": exc.reason})

    # --- pressure -----------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        queued, in_flight, limit = len(self.gate.queue), self.gate.in_flight, self.gate.limit
        pressured = queued > 0 or in_flight >= limit
        reason = f"{queued} queued, {in_flight} in flight, limit {limit}" if pressured else ""
        self.pressure.observe(pressured, self.clock() if now is None else now, reason)

    def _ensure_ticker(self) -> None:
        if self._ticker is None and not self._stop.is_set():
            self._ticker = threading.Thread(target=self._tick_loop, name="admission-tick", daemon=True)
            self._ticker.start()

    def _tick_loop(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.tick()
            except Exception:
                log.exception("admission_tick_failed")

    def close(self) -> None:
        self._stop.set()
        for close in self.closers:
            close()

    # --- what operators see -------------------------------------------------------------------
    def status(self) -> dict[str, object]:
        return {
            "enabled": self.enabled,
            **self.limiter.state(),
            "in_flight": self.gate.in_flight,
            "queued": len(self.gate.queue),
            "queued_by_priority": self.gate.queue.counts(),
            "queue_size": self.gate.queue.size,
            "queue_timeout_s": round(self.gate.timeout_s, 3),
            "queue_sizing": "derived" if self.sizing.derived else "fixed",
            "turn_budget_s": self.sizing.turn_budget_s,
            "admitted": dict(self.admitted),
            "shed": dict(self.shed_counts),
            "rate_limited": dict(self.rate_limited),
            "rate_limits": self.rates.status(),
            "pressure": self.pressure.state(),
            "features": self.features.status(),
        }
