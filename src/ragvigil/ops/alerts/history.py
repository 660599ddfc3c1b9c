"""A sliding window of ragvigil's own metrics, sampled from the Prometheus registry every few seconds.

This is the embedded stand-in for Prometheus' TSDB: the alert evaluator reads rates, ratios and
quantiles from it. Samples are kept in two ``array('d')`` per series (16 bytes a sample, not the
~100 of a tuple), and only for ``retention_s`` — long enough for the widest range in the rules plus
the 5-minute lookback.
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence

from prometheus_client.registry import CollectorRegistry

from ragvigil.ops.alerts.promql import Labels


class _Series:
    __slots__ = ("times", "values")

    def __init__(self) -> None:
        self.times = array("d")
        self.values = array("d")

    def trim(self, before: float) -> None:
        cut = bisect_left(self.times, before)
        if cut > 64 and cut > len(self.times) // 4:  # in chunks: deleting a prefix is O(n)
            del self.times[:cut]
            del self.values[:cut]


class SignalHistory:
    """Series by metric name and labels, each a time-ordered list of (seconds, value)."""

    def __init__(self, retention_s: float = 900.0, names: set[str] | None = None, max_series: int = 50_000) -> None:
        self.retention_s = retention_s
        self.names = names  # keep only these metric names (None: all)
        self.max_series = max_series
        self._series: dict[str, dict[Labels, _Series]] = {}
        self._count = 0
        self._lock = threading.Lock()
        self.last_sample_at: float | None = None
        self.dropped_series = 0

    def add(self, t: float, samples: Iterable[tuple[str, dict[str, str], float]]) -> None:
        """Record one scrape's samples (metric name, labels, value) at time ``t``."""
        with self._lock:
            for name, labels, value in samples:
                if self.names is not None and name not in self.names:
                    continue
                by_labels = self._series.setdefault(name, {})
                key = tuple(sorted({**labels, "__name__": name}.items()))
                series = by_labels.get(key)
                if series is None:
                    if self._count >= self.max_series:
                        self.dropped_series += 1
                        continue
                    series = by_labels[key] = _Series()
                    self._count += 1
                if series.times and t <= series.times[-1]:
                    continue  # one sample per time stamp, in order
                series.times.append(t)
                series.values.append(value)
                series.trim(t - self.retention_s)
            self.last_sample_at = t

    def select(
        self, name: str | None, start: float, end: float, keep: Callable[[Labels], bool] | None = None
    ) -> list[tuple[Labels, Sequence[float], Sequence[float]]]:
        """Series of ``name`` (all when None) that ``keep`` accepts, with their times and values in [start, end]."""
        with self._lock:
            groups = [self._series.get(name, {})] if name else list(self._series.values())
            out = []
            for by_labels in groups:
                for labels, s in by_labels.items():
                    if keep is not None and not keep(labels):
                        continue
                    lo, hi = bisect_left(s.times, start), bisect_right(s.times, end)
                    if lo < hi:
                        out.append((labels, s.times[lo:hi], s.values[lo:hi]))
        return out

    def has_data(self, name: str, start: float, end: float) -> bool:
        """Whether any series of ``name`` has a sample in [start, end] (the no-data check)."""
        with self._lock:
            for s in self._series.get(name, {}).values():
                if s.times and s.times[-1] >= start and bisect_right(s.times, end) > bisect_left(s.times, start):
                    return True
        return False

    @property
    def series_count(self) -> int:
        return self._count


def registry_samples(registry: CollectorRegistry) -> Iterable[tuple[str, dict[str, str], float]]:
    for family in registry.collect():
        for s in family.samples:
            if s.name.endswith("_created"):
                continue  # creation times are not signals (Prometheus drops them too by default)
            yield s.name, s.labels, float(s.value)
