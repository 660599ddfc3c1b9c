"""Readiness checks: each is a callable that raises when its dependency cannot serve."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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


class HealthChecks:
    """Runs named checks concurrently with a timeout; a check never raises out of here.

    Results are cached for ``cache_s`` seconds so that probes from many sources (kubelet,
    load balancer, Prometheus, people) cannot multiply the load on a dependency.
    """

    def __init__(self, timeout_s: float = 3.0, cache_s: float = 2.0) -> None:
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        self._checks: dict[str, tuple[Check, bool, float]] = {}
        self._passed_at: dict[str, tuple[float, CheckResult]] = {}
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="health")
        self._cached: tuple[float, list[CheckResult]] | None = None
        self._lock = threading.Lock()

    def results(self) -> list[CheckResult]:
        """The latest results, re-run when older than ``cache_s``."""
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < self.cache_s:
                return self._cached[1]
            fresh = self.run()
            self._cached = (time.monotonic(), fresh)
            return fresh

    def add(self, name: str, check: Check, critical: bool = True, recheck_passed_s: float = 0.0) -> None:
        """``critical``: without it ragvigil cannot answer at all (readiness fails).

        ``recheck_passed_s``: an expensive check (embedding a word) that passed is trusted this long;
        a failing one is re-run on every refresh, so recovery shows at once.
        """
        self._checks[name] = (check, critical, recheck_passed_s)

    def run(self) -> list[CheckResult]:
        now = time.monotonic()
        futures = {}
        for name, (fn, crit, trust_s) in self._checks.items():
            passed = self._passed_at.get(name)
            if passed is not None and now - passed[0] < trust_s:
                futures[name] = (None, crit)
            else:
                futures[name] = (self._pool.submit(_timed, fn), crit)
        results = []
        for name, (fut, crit) in futures.items():
            if fut is None:
                results.append(self._passed_at[name][1])
                continue
            try:
                latency, error = fut.result(timeout=self.timeout_s)
            except FutureTimeout:
                latency, error = self.timeout_s * 1000, f"timed out after {self.timeout_s}s"
            result = CheckResult(name, error is None, latency, error, crit)
            if result.ok:
                self._passed_at[name] = (now, result)
            else:
                self._passed_at.pop(name, None)
            results.append(result)
        return results

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


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
        results = checks.results()
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
