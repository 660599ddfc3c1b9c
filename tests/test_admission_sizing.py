"""The queue's wait and size from the turn budget and the measured latency (Little's law), and the CPU floor.

Pure functions of made-up numbers: no clock, no timing asserted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ragvigil.config import AdmissionSettings
from ragvigil.ops.admission import Admission, FeatureFlags, Priority, Shed
from ragvigil.ops.admission.limiter import GradientLimiter
from ragvigil.ops.admission.sizing import MIN_WAIT_S, QueueSizing, queue_bound, wait_budget_s


def test_the_wait_is_a_share_of_the_budget_and_never_past_what_the_budget_leaves() -> None:
    assert wait_budget_s(60.0, 0.02, 0.025) == 1.5
    assert wait_budget_s(120.0, 0.02, 0.025) == 3.0  # a longer budget (a slow remote LLM) waits longer
    assert wait_budget_s(10.0, 9.5, 0.5) == 0.5  # a turn that takes 9.5 s of a 10 s budget may wait 0.5 s
    assert wait_budget_s(10.0, 30.0, 0.5) == MIN_WAIT_S  # slower than the budget: hardly any wait, never negative


def test_the_queue_holds_what_starts_within_the_wait() -> None:
    # 10 slots of 20 ms drain 500 requests a second: 1.5 s of wait is 750 waiters, under a ceiling of 1,000
    assert queue_bound(10, 10 / 0.02, 1.5, 1000) == 750
    assert queue_bound(10, 10 / 0.02, 1.5, 512) == 512  # the ceiling bounds it whatever the numbers say
    # 4 slots of 2 s (a slow LLM) drain 2 a second: three waiters start within 1.5 s, a fourth would not
    assert queue_bound(4, 4 / 2.0, 1.5, 512) == 3
    assert queue_bound(2, 2 / 60.0, 1.5, 512) == 1  # never 0: one waiter may always take the next free slot
    assert queue_bound(16, 0.0, 1.5, 512) == 16  # nothing measured yet: one round of slots


def test_the_drain_rate_is_the_measured_one_when_little_s_law_on_a_shrunk_limit_undercounts_it() -> None:
    limiter = GradientLimiter(initial=8, min_limit=2, max_limit=8, window_s=1.0)
    t = 0.0
    for _ in range(3 * 100):  # three windows of 100 answers a second, each taking 80 ms with 8 in flight
        t += 0.01
        limiter.sample(0.08, 8, t)
    assert limiter.answers_per_s is not None and 95 <= limiter.answers_per_s <= 105
    limiter.estimate = 2.0  # a limit just shrunk, while the short latency still holds the wider one's
    assert limiter.limit / limiter.short_rtt < 30  # Little's law on it alone: 25 a second
    assert limiter.drain_per_s() == limiter.answers_per_s


def test_fixed_settings_win_over_the_derived_ones() -> None:
    sizing = QueueSizing(
        60.0,
        0.025,
        512,
        limit=lambda: 8,
        service_s=lambda: 0.04,
        drain_per_s=lambda: 200,
        fixed_size=2,
        fixed_wait_s=60,
    )
    assert sizing() == (2, 60.0) and not sizing.derived
    derived = QueueSizing(60.0, 0.025, 512, limit=lambda: 8, service_s=lambda: 0.04, drain_per_s=lambda: 200)
    assert derived() == (300, 1.5) and derived.derived


def test_fifty_closed_loop_clients_of_a_fast_service_all_wait_and_a_burst_past_the_wait_is_shed() -> None:
    """The old fixed 32 shed 50 closed-loop clients at any limit under 18; the derived queue takes them all,
    and still refuses a request that could not start within its wait."""

    async def scenario() -> tuple[int, int, str]:
        settings = AdmissionSettings(initial_limit=8, min_limit=8, max_limit=8, queue_wait_share=0.05)
        adm = Admission(settings, FeatureFlags())
        for _ in range(20):
            adm.limiter.sample(0.02, 8)  # 8 slots of 20 ms: 400 answers a second
        held = [await adm.admit(Priority.normal) for _ in range(8)]
        waiting = [asyncio.create_task(adm.admit(Priority.normal)) for _ in range(42)]
        await asyncio.sleep(0)
        queued = len(adm.gate.queue)
        for _ in range(100):
            adm.limiter.sample(1.0, 8)  # now each takes a second: 8/s, 3 s of wait (0.05 of 60 s) holds 24 waiters
        reason = "admitted"
        try:
            await adm.admit(Priority.normal)
        except Shed as exc:
            reason = exc.reason
        size = adm.gate.queue.size
        for p in held:
            adm.release(p)
        for t in waiting:
            t.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        return queued, size, reason

    queued, size, reason = asyncio.run(scenario())
    assert queued == 42  # nobody shed: 42 waiters start within 0.11 s
    assert size == 24 and reason == "predicted_wait"  # 43 ahead at 8/s: 5.4 s, past the 3 s wait


def test_the_cpu_bound_shrink_stops_where_the_cpu_would_go_idle() -> None:
    """A turn of 2 ms of CPU that takes 20 ms unqueued (it waits on a commit) needs 10 in flight to keep one
    core busy: latency rising from queueing for the CPU shrinks the limit to that, not to the floor of 2."""
    t = [0.0]
    cpu = [0.0]
    limiter = GradientLimiter(initial=32, min_limit=2, max_limit=64, window_s=0.5, cpu_clock=lambda: cpu[0])
    for n, seconds in ((10, 30.0), (32, 30.0)):
        end = t[0] + seconds
        while t[0] < end:
            running = min(n, limiter.limit)
            rate = min(running / 0.02, 1 / 0.002)  # answers/s: bounded by one core at 2 ms each
            t[0] += 1 / rate
            cpu[0] += 0.002
            limiter.sample(running / rate, running, t[0])  # Little's law: latency = in flight / throughput
    assert limiter.cpu_bound
    state = limiter.state()
    assert 9 <= state["busy_floor"] <= 13  # cpu_share 1 × ~20 ms / 2 ms ≈ 10 (the baseline drifts up a little)
    assert limiter.state()["delivery_floor"] <= 13  # the fewest in flight that answered 500/s
    assert 9 <= limiter.limit <= 13
    unfloored = GradientLimiter(initial=32, min_limit=2, max_limit=64, window_s=0.5, cpu_clock=lambda: cpu[0])
    assert unfloored.busy_floor(0.02) == 2  # nothing measured: no floor above min_limit


def test_a_flood_of_refusals_does_not_talk_the_limit_below_what_delivered_capacity() -> None:
    """Under a burst every turn is a little slower (the 503s take CPU too), so each window delivers a
    little less than the limit allows; the busy floor follows the window's own rate (``rate × rtt0``)
    and, window by window, the limit spiralled to its minimum (16 → 3 in the 10x drill, goodput
    0.71x). The delivery floor keeps what the best recent window delivered, so answers per second hold."""

    def run(rate_windows: int) -> tuple[GradientLimiter, float, float]:
        t, cpu = [0.0], [0.0]
        limiter = GradientLimiter(
            initial=16, min_limit=2, max_limit=64, window_s=0.5, cpu_clock=lambda: cpu[0], rate_windows=rate_windows
        )

        def serve(seconds: float, users: int, latency: Callable[[int], float], cpu_per_answer: float) -> float:
            end, answers = t[0] + seconds, 0
            while t[0] < end:
                running = min(users, limiter.limit)
                rtt = latency(running)
                t[0] += rtt / running  # Little's law: `running` in flight finish one every rtt / running
                cpu[0] += cpu_per_answer
                answers += 1
                limiter.sample(rtt, running, t[0])
            return answers / seconds

        before = serve(30.0, 8, lambda running: 0.069, 0.008)  # 8 users in a closed loop: ~116 answers/s
        # the flood: every turn at least 75 ms, at most 120 answers/s; the refusals' CPU counted per answer
        during = serve(30.0, 1000, lambda running: max(0.075, running / 120), 0.025)
        return limiter, before, during

    limiter, before, during = run(10)
    assert limiter.cpu_bound
    assert limiter.limit >= 8
    assert during >= 0.9 * before
    spiralled, _, starved = run(0)  # the busy floor alone
    assert spiralled.limit <= 3
    assert starved < 0.5 * before
