"""Readiness checks: each is a callable that raises when its dependency cannot serve.

Readiness and ``/health`` read the *dependency graph* (``DEPENDENCIES``), not the check list: a check
that is no leaf of the graph would be run and shown but never change readiness. So ``add`` refuses a
critical check outside the graph and warns about an optional one; ``needed_by`` places a new check.
"""

from __future__ import annotations

import copy
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ragvigil.ops.metrics import REGISTRY

Check = Callable[[], None]
Graph = dict[str, list[tuple[str, bool]]]

log = logging.getLogger(__name__)


class CheckOutsideGraph(ValueError):
    """A critical check that no node of the dependency graph needs: it could never fail readiness."""


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


class _Run:
    """One running copy of a check; its thread records the result before setting ``done``."""

    __slots__ = ("done", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.done = threading.Event()


class _Slot:
    """One check and its state: at most one copy runs at a time, on a thread of its own."""

    def __init__(self, name: str, fn: Check, critical: bool, trust_s: float) -> None:
        self.name = name
        self.fn = fn
        self.critical = critical
        self.trust_s = trust_s
        self.running: _Run | None = None
        self.runs = 0  # copies started, for tests and diagnosis
        self.last: CheckResult | None = None
        self.last_at = 0.0  # monotonic time the last copy finished

    def fresh(self, now: float, cache_s: float) -> bool:
        """The last result may be served again without running the check."""
        if self.last is None:
            return False
        age = now - self.last_at
        return age < cache_s or (self.last.ok and age < self.trust_s)


class HealthChecks:
    """Runs named checks concurrently with a timeout; a check never raises out of here.

    Each copy of a check runs on a daemon thread of its own, and at most one copy of a check runs
    at a time: a caller that finds it still running waits on that same copy (up to the timeout)
    or reports it "still running", instead of queuing another copy behind it. So a hung dependency
    (an embedding engine busy for minutes) can neither pile up threads nor delay or fail the other
    checks, and it cannot hold up the process's exit either.

    Results are cached for ``cache_s`` seconds so that probes from many sources (kubelet,
    load balancer, Prometheus, people) cannot multiply the load on a dependency.
    """

    def __init__(self, timeout_s: float = 3.0, cache_s: float = 2.0, graph: Graph | None = None) -> None:
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        # this instance's own edges; given a graph (the runtime's), every check must be placed in it
        self.graph: Graph = copy.deepcopy(DEPENDENCIES if graph is None else graph)
        self._placed_only = graph is not None
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()
        self._closed = False

    def add(
        self,
        name: str,
        check: Check,
        critical: bool = True,
        recheck_passed_s: float = 0.0,
        needed_by: str | None = None,
    ) -> None:
        """``critical``: without it ragvigil cannot answer at all (readiness fails).

        ``recheck_passed_s``: an expensive check (embedding a word) that passed is trusted this long;
        a failing one is re-run on every refresh, so recovery shows at once.
        ``needed_by``: the graph node that depends on this check (an edge, required when ``critical``);
        without it the name must already be a leaf of the graph. With a graph given to the constructor
        (the runtime's), a critical check outside it raises ``CheckOutsideGraph`` and an optional one is
        logged, since it only ever shows in ``/health``; a bare ``HealthChecks()`` (a list of checks
        without readiness: tests, the metrics doc) takes any name.
        """
        with self._lock:
            if needed_by is not None:
                edges = self.graph.setdefault(needed_by, [])
                edges[:] = [e for e in edges if e[0] != name] + [(name, critical)]
            placed = not self._placed_only or any(dep == name for edges in self.graph.values() for dep, _ in edges)
            if not placed and critical:
                raise CheckOutsideGraph(
                    f"health check {name!r} is critical but no node of the dependency graph needs it, so it "
                    f"could never fail readiness: pass needed_by=<node> (nodes: {', '.join(self.graph)})"
                )
            if not placed:
                log.warning("health_check_outside_graph", extra={"check": name, "nodes": sorted(self.graph)})
            self._slots[name] = _Slot(name, check, critical, recheck_passed_s)

    def rollup(self, results: list[CheckResult]) -> dict[str, dict]:
        """``rollup`` over this instance's graph (the default graph plus the edges ``add`` placed)."""
        return rollup(results, self.graph)

    def runs(self, name: str) -> int:
        """How many copies of check ``name`` have been started (a hung one counts once)."""
        return self._slots[name].runs

    def results(self, wait_optional: bool = True) -> list[CheckResult]:
        """The latest result of every check, refreshing those older than ``cache_s``.

        ``wait_optional=False`` (readiness): wait only for the critical checks; an optional check
        still running answers with its last result, so readiness never waits on a fallback.
        """
        now = time.monotonic()
        waits: list[tuple[_Slot, _Run]] = []
        with self._lock:
            slots = list(self._slots.values())
            for slot in slots:
                if slot.fresh(now, self.cache_s) or (self._closed and slot.running is None):
                    continue
                if slot.running is None:
                    slot.running = _Run(now)
                    slot.runs += 1
                    worker = threading.Thread(
                        target=self._work, args=(slot, slot.running), name=f"health-{slot.name}", daemon=True
                    )
                    worker.start()
                waits.append((slot, slot.running))
        for slot, run in waits:
            if wait_optional or slot.critical or slot.last is None:
                run.done.wait(max(0.0, run.started + self.timeout_s - time.monotonic()))
        with self._lock:
            now = time.monotonic()
            return [self._current(slot, now) for slot in slots]

    def _work(self, slot: _Slot, run: _Run) -> None:
        latency, error = _timed(slot.fn)
        with self._lock:
            if slot.running is run:
                slot.last = CheckResult(slot.name, error is None, latency, error, slot.critical)
                slot.last_at = time.monotonic()
                slot.running = None
        run.done.set()

    def _current(self, slot: _Slot, now: float) -> CheckResult:
        run = slot.running
        if run is not None:
            elapsed = now - run.started
            if elapsed >= self.timeout_s:
                return CheckResult(
                    slot.name, False, elapsed * 1000, f"timed out: still running after {elapsed:.1f}s", slot.critical
                )
            if slot.last is not None:
                return slot.last
            return CheckResult(slot.name, False, elapsed * 1000, "still running (no result yet)", slot.critical)
        if slot.last is None:
            return CheckResult(slot.name, False, 0.0, "not run: health checks are closed", slot.critical)
        return slot.last

    def close(self) -> None:
        """No new copies start; running ones finish on their daemon threads."""
        self._closed = True


def disk_check(path: Path, min_free_mb: Callable[[], int]) -> Check:
    """A check failing when the disk holding ``path`` has less than ``min_free_mb()`` MB free (journal, logs,
    index); the bound is read on every run, so a changed setting applies at once."""

    def check() -> None:
        free = shutil.disk_usage(path).free
        if free < min_free_mb() * 1024 * 1024:
            raise OSError(f"only {free // (1024 * 1024)} MB free under {path}")

    return check


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
    "alerting": [("notifications", False)],  # not under chat: a dead channel never makes ragvigil unready
}
_RANK = {"healthy": 0, "degraded": 1, "unhealthy": 2}


def rollup(results: list[CheckResult], graph: Graph = DEPENDENCIES) -> dict[str, dict]:
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
        for node, info in checks.rollup(results).items():
            status.add_metric([node], float(_STATUS_VALUE[info["status"]]))
        yield status


HEALTH_COLLECTOR = HealthCollector()
REGISTRY.register(HEALTH_COLLECTOR)
