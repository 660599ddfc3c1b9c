"""An adaptive concurrency limit from measured latency, after Netflix concurrency-limits' Gradient2.

Why written here: no maintained adaptive limiter exists for Python ASGI (Netflix's is Java, Envoy's
is C++ in the proxy). The idea: a long-term average of the request latency is the service's
"no queueing" latency; when the short-term average rises above it (times a tolerance), requests
are queueing inside the service, so the limit shrinks by the ratio; while latency stays at the
baseline the limit grows by a small headroom. The limit is only raised while it is actually used
(at least half in flight), so an idle service does not talk itself into an unbounded limit.

The state is plain numbers updated per sample, so it can be unit-tested with made-up latencies and
later kept elsewhere; it does not read a clock itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class _Ema:
    """An exponential moving average that starts as a plain mean over its first ``window`` samples."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.value = 0.0
        self.count = 0

    def add(self, sample: float) -> float:
        if self.count < self.window:
            self.count += 1
            self.value += (sample - self.value) / self.count
        else:
            self.value += (sample - self.value) * 2 / (self.window + 1)
        return self.value


@dataclass
class GradientLimiter:
    initial: int = 16
    min_limit: int = 2
    max_limit: int = 64
    tolerance: float = 1.5  # a short-term latency up to 1.5× the long-term one is not queueing
    smoothing: float = 0.2  # how much of a new estimate is taken per sample
    short_window: int = 10
    long_window: int = 300

    def __post_init__(self) -> None:
        self.estimate = float(max(self.min_limit, min(self.max_limit, self.initial)))
        self._short = _Ema(self.short_window)
        self._long = _Ema(self.long_window)
        self.samples = 0

    @property
    def limit(self) -> int:
        return int(self.estimate)

    @property
    def short_rtt(self) -> float:
        return self._short.value

    @property
    def long_rtt(self) -> float:
        return self._long.value

    def sample(self, rtt_s: float, in_flight: int) -> int:
        """Take one request's latency (``in_flight``: requests running when it ended); returns the new limit."""
        if rtt_s <= 0 or math.isnan(rtt_s):
            return self.limit
        self.samples += 1
        short = self._short.add(rtt_s)
        long = self._long.add(rtt_s)
        if long / short > 2:  # latency fell far below the baseline: let the baseline follow it down faster
            self._long.value = long = long * 0.95
        if in_flight < self.estimate / 2:
            return self.limit  # the limit is not what holds requests back: no evidence to move it
        gradient = max(0.5, min(1.0, self.tolerance * long / short))
        headroom = math.sqrt(self.estimate)
        target = self.estimate * gradient + headroom
        estimate = self.estimate * (1 - self.smoothing) + target * self.smoothing
        self.estimate = max(float(self.min_limit), min(float(self.max_limit), estimate))
        return self.limit

    def state(self) -> dict[str, float]:
        return {
            "limit": self.limit,
            "min_limit": self.min_limit,
            "max_limit": self.max_limit,
            "short_rtt_s": round(self.short_rtt, 4),
            "long_rtt_s": round(self.long_rtt, 4),
            "samples": self.samples,
        }
