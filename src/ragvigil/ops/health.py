"""Readiness checks: each is a callable that raises when its dependency cannot serve."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ragvigil.ops.metrics import REGISTRY

Check = Callable[[], None]


@dataclass
class CheckResult:
    name: str
    ok: bool
    latency_ms: float
    error: str | None = None
    critical: bool = True

    def to_dict(self) -> dict[str, object]:
        return {
            "status": "ok" if self.ok else "failing",
            "latency_ms": round(self.latency_ms, 2),
            "error": self.error,
        }


class _Slot:
    """One check and its state: at most one copy runs at a time, on the check's own thread."""

    def __init__(self, name: str, fn: Check, critical: bool, trust_s: float) -> None:
        self.name = name
        self.fn = fn
        self.critical = critical
        self.trust_s = trust_s
        # one worker per check: a hung check holds only its own thread, never another check's
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"health-{name}")
        self.running: Future[tuple[float, str | None]] | None = None
        self.started = 0.0
        self.runs = 0  # copies started, for /health and tests
        self.last: CheckResult | None = None
        self.last_at = 0.0  # monotonic time the last result was taken

    def fresh(self, now: float, cache_s: float) -> bool:
        """The last result may be served again without running the check."""
        if self.last is None:
            return False
        age = now - self.last_at
        return age < cache_s or (self.last.ok and age < self.trust_s)


class HealthChecks:
    """Runs named checks concurrently with a timeout; a check never raises out of here.

    Each check runs on its own thread and at most one copy of it runs at a time: a caller that
    finds it still running waits for that same copy (up to the timeout), or reports it "still
    running", instead of queuing another copy behind it. So a hung dependency (an embedding engine
    busy for minutes) can neither pile up threads nor delay or fail the other checks.

    Results are cached for ``cache_s`` seconds so that probes from many sources (kubelet,
    load balancer, Prometheus, people) cannot multiply the load on a dependency.
    """

    def __init__(self, timeout_s: float = 3.0, cache_s: float = 2.0) -> None:
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()

    def add(self, name: str, check: Check, critical: bool = True, recheck_passed_s: float = 0.0) -> None:
        """``critical``: without it ragvigil cannot answer at all (readiness fails).

        ``recheck_passed_s``: an expensive check (embedding a word) that passed is trusted this long;
        a failing one is re-run on every refresh, so recovery shows at once.
        """
        with self._lock:
            old = self._slots.get(name)
            self._slots[name] = _Slot(name, check, critical, recheck_passed_s)
        if old is not None:
            old.executor.shutdown(wait=False, cancel_futures=True)

    def runs(self, name: str) -> int:
        """How many copies of check ``name`` have been started (a hung one counts once)."""
        return self._slots[name].runs

    def results(self, wait_optional: bool = True) -> list[CheckResult]:
        """The latest result of every check, refreshing those older than ``cache_s``.

        ``wait_optional=False`` (readiness): wait only for the critical checks; an optional check
        still running answers with its last result, so readiness never waits on a fallback.
        """
        now = time.monotonic()
        waits: list[tuple[_Slot, Future[tuple[float, str | None]], float]] = []
        with self._lock:
            slots = list(self._slots.values())
            for slot in slots:
                if slot.fresh(now, self.cache_s):
                    continue
                if slot.running is None:
                    slot.started = now
                    slot.runs += 1
                    slot.running = slot.executor.submit(_timed, slot.fn)
                waits.append((slot, slot.running, slot.started + self.timeout_s))
        for slot, fut, deadline in waits:
            if not (wait_optional or slot.critical or slot.last is None):
                continue
            with contextlib.suppress(FutureTimeout):  # still running: reported as such below
                fut.result(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            for slot, fut, _ in waits:
                if fut.done():
                    self._take(slot, fut)
            return [self._current(slot, time.monotonic()) for slot in slots]

    def _take(self, slot: _Slot, fut: Future[tuple[float, str | None]]) -> None:
        """Record a finished copy's result (once: the first caller to see it done)."""
        if slot.running is not fut:
            return
        latency, error = fut.result()
        slot.last = CheckResult(slot.name, error is None, latency, error, slot.critical)
        slot.last_at = time.monotonic()
        slot.running = None

    def _current(self, slot: _Slot, now: float) -> CheckResult:
        if slot.running is not None:
            elapsed = now - slot.started
            if elapsed >= self.timeout_s:
                return CheckResult(
                    slot.name, False, elapsed * 1000, f"timed out: still running after {elapsed:.1f}s", slot.critical
                )
            if slot.last is not None:
                return slot.last
            return CheckResult(slot.name, False, elapsed * 1000, "still running (no result yet)", slot.critical)
        assert slot.last is not None
        return slot.last

    def close(self) -> None:
        for slot in self._slots.values():
            slot.executor.shutdown(wait=False, cancel_futures=True)


def _timed(fn: Check) -> tuple[float, str | None]:
    start = time.perf_counter()
    try:
        fn()
        return (time.perf_counter() - start) * 1000, None
    except Exception as exc:  # a check reports failure; it must not crash the probe
        return (time.perf_counter() - start) * 1000, f"{type(exc).__name__}: {exc}"[:500]


# What needs what. Each edge says whether the dependency is *required*: a failing required
# dependency makes the node unhealthy; a failing optional one (there is a fallback) makes it
# degraded. The roll-up of "chat" is the service's own status.
DEPENDENCIES: dict[str, list[tuple[str, bool]]] = {
    "chat": [("retrieval", True), ("generation", True), ("persistence", True)],
    "retrieval": [("database", True), ("vector_store", False), ("embedding", False)],
    "generation": [("generator", False)],  # the extractive generator answers when it fails
    "persistence": [("database", False), ("disk", True)],  # the journal keeps turns while the DB is down
}
_RANK = {"healthy": 0, "degraded": 1, "unhealthy": 2}


def rollup(results: list[CheckResult], graph: dict[str, list[tuple[str, bool]]] = DEPENDENCIES) -> dict[str, dict]:
    """Status of every node of the graph from the leaf checks (a missing leaf counts as healthy)."""
    leaf = {r.name: ("healthy" if r.ok else "unhealthy") for r in results}
    out: dict[str, dict] = {}

    def status(node: str) -> str:
        if node in out:
            return out[node]["status"]
        if node not in graph:
            return leaf.get(node, "healthy")
        worst = "healthy"
        for dep, required in graph[node]:
            s = status(dep)
            if s != "healthy":
                s = s if required else "degraded"
            worst = max(worst, s, key=_RANK.__getitem__)
        out[node] = {"status": worst, "depends_on": [{"name": d, "required": r} for d, r in graph[node]]}
        return worst

    for node in graph:
        status(node)
    return out


_STATUS_VALUE = {"healthy": 0, "degraded": 1, "unhealthy": 2}


class HealthCollector(Collector):
    """Health as metrics, so alert rules (ours and Prometheus') can read it.

    ``ragvigil_health_check_up{check}`` is 1/0 per leaf check; ``ragvigil_health_status{component}``
    is the roll-up of every node of the dependency graph (0 healthy, 1 degraded, 2 unhealthy).
    Reads the cached results, so a scrape never multiplies the load on a dependency.
    """

    def __init__(self) -> None:
        self.checks: HealthChecks | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        checks = self.checks
        if checks is None:
            return
        results = checks.results(wait_optional=False)  # a scrape never waits on a fallback's check
        up = GaugeMetricFamily("ragvigil_health_check_up", "Health check passing (1) or failing (0).", labels=["check"])
        for r in results:
            up.add_metric([r.name], 1.0 if r.ok else 0.0)
        yield up
        status = GaugeMetricFamily(
            "ragvigil_health_status",
            "Roll-up of the dependency graph per component: 0 healthy, 1 degraded, 2 unhealthy.",
            labels=["component"],
        )
        for node, info in rollup(results).items():
            status.add_metric([node], float(_STATUS_VALUE[info["status"]]))
        yield status


HEALTH_COLLECTOR = HealthCollector()
REGISTRY.register(HEALTH_COLLECTOR)
