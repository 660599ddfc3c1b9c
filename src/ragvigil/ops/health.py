"""Readiness checks: each is a callable that raises when its dependency cannot serve."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

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
    """Runs named checks concurrently with a timeout; a check never raises out of here."""

    def __init__(self, timeout_s: float = 3.0) -> None:
        self.timeout_s = timeout_s
        self._checks: dict[str, tuple[Check, bool]] = {}
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="health")

    def add(self, name: str, check: Check, critical: bool = True) -> None:
        """``critical``: without it ragvigil cannot answer at all (readiness fails)."""
        self._checks[name] = (check, critical)

    def run(self) -> list[CheckResult]:
        futures = {name: (self._pool.submit(_timed, fn), crit) for name, (fn, crit) in self._checks.items()}
        results = []
        for name, (fut, crit) in futures.items():
            try:
                latency, error = fut.result(timeout=self.timeout_s)
            except FutureTimeout:
                latency, error = self.timeout_s * 1000, f"timed out after {self.timeout_s}s"
            results.append(CheckResult(name, error is None, latency, error, crit))
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
