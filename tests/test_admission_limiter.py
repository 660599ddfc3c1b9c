"""The adaptive limit under a burst, fed latencies on a fake clock: it holds, it does not climb to its ceiling."""

from __future__ import annotations

from ragvigil.ops.admission.limiter import GradientLimiter

RATE = 60.0  # answers per second the simulated service completes, whatever the concurrency (one CPU-bound core)


def serve(limiter: GradientLimiter, t: float, seconds: float, in_flight: int | None) -> tuple[float, list[int]]:
    """Completions every 1/RATE s; each took in_flight/RATE s (Little's law). ``None``: a burst keeps the limit full."""
    limits = []
    for _ in range(int(seconds * RATE)):
        t += 1 / RATE
        n = limiter.limit if in_flight is None else in_flight
        limiter.sample(max(0.02, n / RATE), n, t)
        limits.append(limiter.limit)
    return t, limits


def test_a_burst_of_seconds_cannot_talk_the_limit_up_to_its_ceiling() -> None:
    limiter = GradientLimiter(initial=16, min_limit=2, max_limit=64, window_s=1.0)
    t, _ = serve(limiter, 0.0, 120, in_flight=8)  # two minutes of 8 closed-loop users set the baseline
    before = limiter.limit
    t, during = serve(limiter, t, 10, in_flight=None)  # then 10 s with more work than slots: the limit is full
    assert max(during) <= before + 2  # fed per request, the baseline caught up and the limit reached 64
    assert limiter.limit / RATE < 0.5  # so an admitted turn spends under 0.5 s inside the service
    assert limiter.windows <= 131  # one move per second of answers, not one per answer


def test_the_limit_moves_once_per_window_from_its_average() -> None:
    limiter = GradientLimiter(initial=20, min_limit=2, max_limit=100, window_s=1.0, min_window_samples=10)
    for i in range(9):
        limiter.sample(0.1, 20, now=i * 0.2)  # 1.6 s but 9 samples: the window stays open
    assert limiter.windows == 0 and limiter.limit == 20
    limiter.sample(0.1, 20, now=2.0)  # the tenth closes it: the baseline is healthy, so it grows by the headroom
    assert limiter.windows == 1 and limiter.limit == 20
    assert limiter.estimate == 20 * 0.8 + (20 + 4) * 0.2
    for i in range(10):
        limiter.sample(0.1, 20, now=2.1 + i * 0.01)  # a window of 0.1 s: not long enough
    assert limiter.windows == 1


def test_sustained_queueing_shrinks_the_limit_and_calm_lets_it_grow_back() -> None:
    limiter = GradientLimiter(initial=32, min_limit=2, max_limit=64, window_s=1.0)
    t, _ = serve(limiter, 0.0, 60, in_flight=20)
    steady = limiter.limit
    for _ in range(20 * 10):  # 20 s in which every answer takes 5x the baseline with the limit in use
        t += 0.1
        limiter.sample(5 * 20 / RATE, limiter.limit, t)
    slow = limiter.limit
    assert slow < steady / 2
    t, _ = serve(limiter, t, 30, in_flight=None)  # latency back to normal for what is admitted
    assert limiter.limit > slow


def test_the_baseline_forgets_a_slow_warm_up_within_a_few_windows() -> None:
    limiter = GradientLimiter(initial=16, min_limit=2, max_limit=64, window_s=1.0)
    t = 0.0
    for rtt in (1.0, 0.8):  # two cold windows (caches empty), then a warm service
        for _ in range(10):
            t += 0.1
            limiter.sample(rtt, 8, t)
    for _ in range(4 * 10):
        t += 0.1
        limiter.sample(0.1, 8, t)
    assert limiter.long_rtt < 0.2  # a plain long average would still say ~0.5 s: a limit twice too high looks healthy


def test_a_latency_above_the_baseline_already_reads_as_queueing() -> None:
    limiter = GradientLimiter(initial=20, min_limit=2, max_limit=64, window_s=1.0)
    t, seen = 0.0, {}
    for rtt in [0.1] * 20 + [0.13] * 5:  # past the warm-up, then 30 % over the baseline, the limit in use
        for _ in range(10):
            t += 0.1
            limiter.sample(rtt, limiter.limit, t)
        seen[rtt] = limiter.limit
    # Gradient2's gradient is long/short: a sustained rise shrinks the limit (a 1.5 tolerance kept it growing)
    assert seen[0.13] < seen[0.1]


def contended_rate(n: int) -> float:
    """A CPU-bound service whose answers per second fall once more than 8 turns contend (GIL, write lock)."""
    return RATE if n <= 8 else RATE * 8 / n


def burst_goodput(limiter: GradientLimiter, clock: list[float]) -> float:
    """Answers/s over a 20 s burst (the limit always full) as a share of 60 s of 8 closed-loop users before it."""

    def run(seconds: float, in_flight: int | None) -> float:
        end, done = clock[0] + seconds, 0
        while clock[0] < end:
            n = limiter.limit if in_flight is None else in_flight
            rate = contended_rate(n)
            clock[0] += 1 / rate
            limiter.sample(n / rate, n, clock[0])
            done += 1
        return done / seconds

    capacity = run(60, in_flight=8)
    return run(20, in_flight=None) / capacity


def test_a_cpu_bound_instance_shrinks_to_the_concurrency_that_answers_most() -> None:
    clock = [0.0]
    busy = GradientLimiter(initial=16, max_limit=64, window_s=0.5, cpu_clock=lambda: 0.95 * clock[0])
    assert burst_goodput(busy, clock) >= 0.9
    assert busy.cpu_bound and busy.state()["cpu_share"] == 0.95
    assert busy.limit <= 8
    clock = [0.0]  # plain Gradient2 keeps its headroom of queueing: 10-11 slots, each turn slower, fewer answers
    plain = GradientLimiter(initial=16, max_limit=64, window_s=0.5)
    assert burst_goodput(plain, clock) < 0.8
    assert not plain.cpu_bound and plain.state()["cpu_share"] is None


def test_waiting_on_a_remote_llm_is_not_cpu_bound_and_noisy_latency_does_not_collapse_the_limit() -> None:
    import random

    rng = random.Random(1)
    t = [0.0]
    limiter = GradientLimiter(initial=16, max_limit=64, window_s=0.5, cpu_clock=lambda: 0.2 * t[0])
    limits = []
    while t[0] < 120:  # every answer ~2 s (lognormal), whatever the concurrency: more in flight, more answers
        n = limiter.limit
        rtt = 2.0 * rng.lognormvariate(0, 0.3)
        t[0] += rtt / n
        limiter.sample(rtt, n, t[0])
        limits.append(limiter.limit)
    assert not limiter.cpu_bound
    assert sum(limits) / len(limits) >= 16  # an unsmoothed decrease on every slow window would sink it to 2
    assert min(limits[len(limits) // 2 :]) >= 8
