"""An adaptive concurrency limit from measured latency, after Netflix concurrency-limits' Gradient2.

Why written here: no maintained adaptive limiter exists for Python ASGI (Netflix's is Java, Envoy's
is C++ in the proxy). The idea: a long-term average of the request latency is the service's
"no queueing" latency; when the short-term average rises above it (times a tolerance), requests
are queueing inside the service, so the limit shrinks by the ratio; while latency stays at the
baseline the limit grows by a small, fixed headroom (Gradient2's ``queueSize``, 4). The limit is
only moved while it is actually used (at least half in flight), so an idle service does not talk
itself into an unbounded limit.

The baseline rises at the pace of that long average but falls halfway to a faster window at once: as in
Vegas (whose no-load latency is the lowest seen), the quietest recent latency is the one without
queueing. Gradient2's own "fall faster when the baseline is twice the current latency" (×0.9 per
window) kept the baseline of a burst's warm-up, so a limit twice too high looked healthy.

As in Netflix's ``WindowedLimit``, the limit moves once per *window* (at least ``window_s`` seconds
and ``min_window_samples`` requests), from the window's average latency and its largest in-flight
count, and the long-term average spans ``long_window`` windows (minutes), not requests. Fed per
request, a baseline of 300 requests lasts 5 s at 60 answers/s: under a burst it caught up with the
queueing latency within seconds, the gradient read "no queueing" again and the limit climbed to its
ceiling, so admitted turns queued inside the service (p95 2.8 s in the 10x drill). Per window, a
burst of seconds cannot move the baseline, and the limit moves at most ``smoothing`` per window.

A CPU-bound instance is the one case Gradient2 gets wrong. Where the work waits on something else (a
remote LLM), more requests in flight means more answers per second, and the headroom is how the
limit finds that out. Where it is the process's own CPU (the extractive path, or a burst of cheap
turns; in Python one core's worth under the GIL), more in flight only makes every turn slower, and
Gradient2 still settles at ``headroom / (1 - gradient)``: at least 8 with a headroom of 4, however
slow each turn has become. So when the process used at least ``cpu_saturation`` cores over a window
(``cpu_clock``, the process's CPU seconds) and latency is above its baseline, the limit adds no
headroom and shrinks at once (multiplicative decrease, as in AIMD) instead of by ``smoothing``.
Only then: on noisy remote latencies an unsmoothed decrease would talk the limit down to its floor.
In the 10x burst drill on 2 shared cores, with the threshold at 0.6 cores, the limit went from 16 to
6 and admitted p95 from 1.66 s to 0.86 s; goodput did not rise with it (0.66x of capacity), so what
holds goodput back there is not the number of turns in flight.

The shrink stops at the concurrency that keeps the CPU busy without queueing: a turn that spends ``c``
CPU seconds of an unqueued latency ``rtt0`` (the baseline) leaves the CPU idle for the rest, waiting
on a commit, a thread hop or the network, so ``cpu_share × rtt0 / c`` turns in flight are what keep
``cpu_share`` cores busy (Little's law for the CPU). Below that floor the latency no longer falls but
answers per second do (cheap turns that wait on a group commit are the case).

That floor is the window's own rate times the unqueued latency, and under a burst every turn is a
little slower (the 503s take CPU too), so each window delivers a little less than its limit allows
and the floor, window by window, spiralled down: in the 10x drill the limit fell 16 → 3 and goodput
to 0.71x of capacity. So the shrink also stops at the fewest turns in flight (Little's law: answers
per second × their mean latency) that delivered at least ``NEAR_BEST`` of the best rate of the last
``rate_windows`` windows: the concurrency that answers most, measured rather than modelled. A
service that really lost capacity delivers less, and the floor follows within ``rate_windows``
windows; one that only refuses a flood keeps the slots that delivered its capacity (the drill's
goodput went to ≥ 0.97x with the limit held at 8).

The state is plain numbers updated per sample, so it can be unit-tested with made-up latencies and
times; it does not read a clock itself (``now`` is given; without it every sample is its own window;
``cpu_clock`` is read once per window).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

NEAR_BEST = 0.95  # a window this close to the best recent rate counts as having delivered it


class _Ema:
    """An exponential moving average that starts as a plain mean over its first ``warmup`` samples."""

    def __init__(self, window: int, warmup: int | None = None) -> None:
        self.window = window
        self.warmup = window if warmup is None else min(warmup, window)
        self.value = 0.0
        self.count = 0

    def add(self, sample: float) -> float:
        if self.count < self.warmup:
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
    tolerance: float = 1.0  # a short-term latency above the long-term one is queueing (Gradient2 today)
    smoothing: float = 0.2  # how much of a new estimate is taken per window
    short_window: int = 10  # requests: the recent latency the queue predicts waits with
    long_window: int = 600  # windows: the baseline (Gradient2's default: 600 one-second windows)
    headroom: float = 4.0  # growth per window while latency stays at the baseline (Gradient2's queueSize)
    window_s: float = 0.0  # 0: every sample is a window of its own
    min_window_samples: int = 10
    cpu_clock: Callable[[], float] | None = None  # the process's CPU seconds (time.process_time); None: not CPU-aware
    cpu_saturation: float = 0.85  # cores used over a window from which the instance counts as CPU-bound
    rate_windows: int = 10  # recent windows whose best rate the shrink keeps room for (delivery_floor); 0: none

    def __post_init__(self) -> None:
        self.estimate = float(max(self.min_limit, min(self.max_limit, self.initial)))
        self._short = _Ema(self.short_window)
        self._long = _Ema(self.long_window, warmup=10)
        self._window_rtt = _Ema(1)  # the current window's latest average, for status only
        self._sum = 0.0
        self._n = 0
        self._max_in_flight = 0
        self._window_start: float | None = None
        self._window_cpu: float | None = None
        self.cpu_share: float | None = None  # cores the process used over the last closed window
        self.cpu_per_answer: float | None = None  # CPU seconds per answer over the last closed window
        self.answers_per_s: float | None = None  # answers completed per second over the last closed window
        # (answers per second, mean turns in flight) of recent windows: what each concurrency delivered
        self._delivered: deque[tuple[float, float]] = deque(maxlen=max(1, self.rate_windows))
        self.samples = 0
        self.windows = 0

    @property
    def limit(self) -> int:
        return int(self.estimate)

    @property
    def short_rtt(self) -> float:
        return self._short.value

    @property
    def long_rtt(self) -> float:
        return self._long.value

    def sample(self, rtt_s: float, in_flight: int, now: float | None = None) -> int:
        """Take one request's latency (``in_flight``: requests running when it ended); returns the limit."""
        if rtt_s <= 0 or math.isnan(rtt_s):
            return self.limit
        self.samples += 1
        self._short.add(rtt_s)
        self._sum += rtt_s
        self._n += 1
        self._max_in_flight = max(self._max_in_flight, in_flight)
        if now is None or self.window_s <= 0:
            return self._close_window()
        if self._window_start is None:
            self._window_start, self._window_cpu = now, self._cpu()
        if now - self._window_start >= self.window_s and self._n >= self.min_window_samples:
            cpu = self._cpu()
            if now > self._window_start:
                self.answers_per_s = self._n / (now - self._window_start)
                self._delivered.append((self.answers_per_s, self._sum / (now - self._window_start)))
            if cpu is not None and self._window_cpu is not None and now > self._window_start:
                self.cpu_share = (cpu - self._window_cpu) / (now - self._window_start)
                self.cpu_per_answer = (cpu - self._window_cpu) / self._n
            self._window_start, self._window_cpu = now, cpu
            return self._close_window()
        return self.limit

    def _cpu(self) -> float | None:
        return self.cpu_clock() if self.cpu_clock is not None else None

    @property
    def cpu_bound(self) -> bool:
        """Whether the last window used the CPU the instance has (so more in flight cannot add answers)."""
        return self.cpu_share is not None and self.cpu_share >= self.cpu_saturation > 0

    def _close_window(self) -> int:
        rtt, in_flight = self._sum / self._n, self._max_in_flight
        self._sum, self._n, self._max_in_flight = 0.0, 0, 0
        self.windows += 1
        self._window_rtt.value = rtt
        return self._update(rtt, in_flight)

    def _update(self, short: float, in_flight: int) -> int:
        """Gradient2's update from one window's average latency."""
        long = self._long.add(short)
        if short < long:
            # a window faster than the baseline is what "no queueing" looks like (Vegas' rtt_noload is the
            # lowest latency seen): go halfway down to it at once (one odd window cannot set it alone), and
            # up only at the long average's pace
            self._long.value = long = (long + short) / 2
        if in_flight < self.estimate / 2:
            return self.limit  # the limit is not what holds requests back: no evidence to move it
        gradient = max(0.5, min(1.0, self.tolerance * long / short))
        cpu_bound = self.cpu_bound and gradient < 1.0  # queueing for the CPU: see the module docstring
        target = self.estimate * gradient + (0.0 if cpu_bound else self.headroom)
        if cpu_bound and target < self.estimate:
            floor = max(self.busy_floor(long), self.delivery_floor())
            estimate = max(target, min(self.estimate, floor))
        else:
            estimate = self.estimate * (1 - self.smoothing) + target * self.smoothing
        self.estimate = max(float(self.min_limit), min(float(self.max_limit), estimate))
        return self.limit

    def drain_per_s(self) -> float:
        """How many requests a second leave the service: the larger of Little's law on the current limit
        (``limit / short_rtt``) and the answers the last window completed. Right after a shrink the short
        latency still holds the wider limit's queueing, so the first alone would see the queue drain
        slower than it does (a halved limit at twice the latency reads as a quarter of the rate)."""
        little = self.limit / self.short_rtt if self.short_rtt > 0 else 0.0
        return max(little, self.answers_per_s or 0.0)

    def busy_floor(self, baseline_s: float) -> float:
        """In flight that keeps the measured CPU share busy at the unqueued latency: ``cpu_share × rtt0 / c``."""
        if not self.cpu_share or not self.cpu_per_answer or self.cpu_per_answer <= 0:
            return float(self.min_limit)
        return self.cpu_share * baseline_s / self.cpu_per_answer

    def delivery_floor(self) -> float:
        """The fewest turns in flight of a recent window that answered ``NEAR_BEST`` of the best rate."""
        if self.rate_windows <= 0 or not self._delivered:
            return float(self.min_limit)
        best = max(rate for rate, _ in self._delivered)
        return min(in_flight for rate, in_flight in self._delivered if rate >= NEAR_BEST * best)

    def state(self) -> dict[str, float]:
        return {
            "limit": self.limit,
            "min_limit": self.min_limit,
            "max_limit": self.max_limit,
            "short_rtt_s": round(self.short_rtt, 4),
            "window_rtt_s": round(self._window_rtt.value, 4),
            "long_rtt_s": round(self.long_rtt, 4),
            "samples": self.samples,
            "windows": self.windows,
            "cpu_share": None if self.cpu_share is None else round(self.cpu_share, 2),
            "cpu_bound": self.cpu_bound,
            "cpu_ms_per_answer": None if self.cpu_per_answer is None else round(self.cpu_per_answer * 1000, 2),
            "busy_floor": round(self.busy_floor(self.long_rtt), 1),
            "delivery_floor": round(self.delivery_floor(), 1),
            "answers_per_s": None if self.answers_per_s is None else round(self.answers_per_s, 1),
        }
