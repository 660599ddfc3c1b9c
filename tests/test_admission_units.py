"""Admission control's parts on their own: queue order, the gate, the adaptive limit, pressure hysteresis.

No clock is read and no timing is asserted: latencies are made-up numbers fed to the limiter, and
pressure is observed at made-up times.
"""

from __future__ import annotations

import asyncio

import pytest

from ragvigil.config import AdmissionSettings
from ragvigil.ops.admission import Admission, FeatureFlags, Priority, Shed, phrase_check
from ragvigil.ops.admission.limiter import GradientLimiter
from ragvigil.ops.admission.pressure import PressureMonitor
from ragvigil.ops.admission.queue import PriorityGate, WaitQueue


def test_the_queue_serves_higher_priorities_first_and_arrival_order_within_one() -> None:
    q = WaitQueue(10)
    order = [Priority.background, Priority.normal, Priority.vip, Priority.normal, Priority.crisis, Priority.vip]
    waiters = [q.make(p) for p in order]
    for w in waiters:
        assert q.push(w) is None
    popped = [q.pop() for _ in order]
    assert popped == [waiters[4], waiters[2], waiters[5], waiters[1], waiters[3], waiters[0]]
    assert q.pop() is None and len(q) == 0


def test_a_full_queue_sheds_its_lowest_newest_waiter_or_the_newcomer() -> None:
    q = WaitQueue(3)
    a, b, c = q.make(Priority.normal), q.make(Priority.normal), q.make(Priority.background)
    for w in (a, b, c):
        assert q.push(w) is None
    vip = q.make(Priority.vip)
    assert q.push(vip) is c  # background goes first
    late = q.make(Priority.normal)
    assert q.push(late) is late  # nobody below a normal newcomer: the newcomer is refused
    crisis = q.make(Priority.crisis)
    assert q.push(crisis) is b  # of the two normals, the newer one
    assert [q.pop() for _ in range(3)] == [crisis, vip, a]
    only_crisis = WaitQueue(1)
    first, second = only_crisis.make(Priority.crisis), only_crisis.make(Priority.crisis)
    assert only_crisis.push(first) is None and only_crisis.push(second) is second


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_released_slot_goes_to_the_highest_waiter_and_crisis_may_use_the_whole_ceiling() -> None:
    async def scenario() -> list[str]:
        limiter = GradientLimiter(initial=1, min_limit=1, max_limit=2)
        gate = PriorityGate(limiter, queue_size=4, timeout_s=600, clock=FakeClock())
        held = await gate.acquire(Priority.normal)
        crisis = await gate.acquire(Priority.crisis)  # over the adaptive limit, under max_limit: admitted at once
        assert gate.in_flight == 2
        got: list[str] = []

        async def wait(name: str, p: Priority) -> None:
            permit = await gate.acquire(p)
            got.append(name)
            gate.release(permit)

        tasks = [asyncio.create_task(wait(n, p)) for n, p in [("bg", Priority.background), ("n", Priority.normal)]]
        tasks.append(asyncio.create_task(wait("vip", Priority.vip)))
        await asyncio.sleep(0)
        assert len(gate.queue) == 3
        gate.release(crisis)
        gate.release(held)
        await asyncio.gather(*tasks)
        assert gate.in_flight == 0
        return got

    assert asyncio.run(scenario()) == ["vip", "n", "bg"]


def test_a_waiter_displaced_from_a_full_queue_is_shed_at_once() -> None:
    async def scenario() -> tuple[str, int]:
        shed: list[Shed] = []
        gate = PriorityGate(GradientLimiter(1, 1, 1), 1, 600, FakeClock(), on_shed=shed.append)
        held = await gate.acquire(Priority.normal)
        normal = asyncio.create_task(gate.acquire(Priority.normal))
        await asyncio.sleep(0)
        with pytest.raises(Shed) as refused:
            await gate.acquire(Priority.background)  # the queue is full of someone more important
        assert refused.value.reason == "queue_full"
        vip = asyncio.create_task(gate.acquire(Priority.vip))
        await asyncio.sleep(0)
        with pytest.raises(Shed) as displaced:
            await normal
        gate.release(held)
        gate.release(await vip)
        return displaced.value.reason, len(shed)

    assert asyncio.run(scenario()) == ("displaced", 2)


def test_a_request_that_would_wait_past_the_timeout_is_refused_without_waiting() -> None:
    async def scenario() -> str:
        limiter = GradientLimiter(1, 1, 1)
        limiter.sample(5.0, 1)  # one request takes ~5 s; the timeout is 1 s
        gate = PriorityGate(limiter, 8, 1.0, FakeClock())
        held = await gate.acquire(Priority.normal)
        try:
            await gate.acquire(Priority.normal)
        except Shed as exc:
            return exc.reason
        finally:
            gate.release(held)
        return "admitted"

    assert asyncio.run(scenario()) == "predicted_wait"


def test_time_already_spent_in_the_server_counts_against_the_wait() -> None:
    """A request the event loop ran late has less of the wait left: queued behind one 0.5 s turn with a
    1 s wait, it is admitted after arriving just now and refused after 0.8 s spent before it asked."""

    async def scenario(waited_s: float) -> str:
        limiter = GradientLimiter(1, 1, 1)
        limiter.sample(0.5, 1)
        gate = PriorityGate(limiter, 8, 1.0, FakeClock())
        held = await gate.acquire(Priority.normal)
        waiting = asyncio.create_task(gate.acquire(Priority.normal, waited_s=waited_s))
        await asyncio.sleep(0)
        try:
            gate.release(held)
            await waiting
        except Shed as exc:
            return exc.reason
        return "admitted"

    assert asyncio.run(scenario(0.0)) == "admitted"
    assert asyncio.run(scenario(0.8)) == "predicted_wait"


def _feed(limiter: GradientLimiter, rtt: float, n: int) -> int:
    for _ in range(n):
        limiter.sample(rtt, limiter.limit)  # the limit is fully used
    return limiter.limit


def test_the_limit_falls_when_latency_rises_and_rises_when_it_falls() -> None:
    limiter = GradientLimiter(initial=20, min_limit=2, max_limit=100, long_window=100)
    steady = _feed(limiter, 0.1, 100)
    assert steady > 20  # healthy latency and a used limit: it probes upwards
    slow = _feed(limiter, 0.5, 10)
    assert slow < steady  # queueing: latency 5x the baseline
    assert _feed(limiter, 0.5, 10) <= slow
    recovered = _feed(limiter, 0.1, 60)
    assert recovered > slow
    assert limiter.min_limit <= limiter.limit <= limiter.max_limit


def test_the_limit_stays_inside_its_bounds_and_idle_samples_do_not_move_it() -> None:
    limiter = GradientLimiter(initial=30, min_limit=10, max_limit=60)
    seen = set()
    for rtt, n in ((0.01, 200), (10.0, 60)):
        for _ in range(n):
            seen.add(limiter.sample(rtt, limiter.limit))
    assert min(seen) == 10 and max(seen) == 60  # both bounds reached, never passed
    idle = GradientLimiter(initial=10, min_limit=2, max_limit=100)
    for _ in range(100):
        idle.sample(0.1, 1)  # one request in flight of ten allowed: no evidence about the limit
    assert idle.limit == 10


def test_features_are_shed_after_sustained_pressure_and_restored_after_sustained_calm() -> None:
    flags = FeatureFlags()
    switches = []
    flags.observe(switches.append)
    m = PressureMonitor(flags, shed_after_s=2, restore_after_s=5)
    m.observe(True, 0.0, "3 queued")
    m.observe(True, 1.0)
    assert flags.enabled("contextual_search")  # a moment of queueing is not an overload
    m.observe(True, 2.5)
    assert not flags.enabled("contextual_search") and not flags.enabled("stream_extras")
    assert (switches[0].feature, switches[0].enabled, switches[0].by) == ("contextual_search", False, "admission")
    m.observe(False, 3.0)
    m.observe(True, 3.5)  # pressure again: the calm clock starts over
    m.observe(False, 4.0)
    m.observe(False, 8.5)
    assert not flags.enabled("contextual_search")
    flags.restore("stream_extras", "operator:ana")
    flags.shed("stream_extras", "by hand", "operator:ana")  # an operator's own decision
    m.observe(False, 9.5)
    assert flags.enabled("contextual_search")
    assert not flags.enabled("stream_extras")  # not undone by the controller
    assert sum(1 for s in switches if s.feature == "contextual_search") == 2  # one off, one on


def test_the_crisis_check_matches_zh_and_en_phrases_and_nothing_ordinary() -> None:
    check = phrase_check()
    for text in ("我真的不想活了", "有时候想自杀", "I want to KILL   myself", "thinking about suicide"):
        assert check(text), text
    for text in ("How do I export my notes?", "专业版年付多少钱？", "kill the process"):
        assert not check(text), text


def test_priority_of_a_request() -> None:
    adm = Admission(AdmissionSettings(vip_keys=["rv_abc1234"]), FeatureFlags())
    assert adm.priority_of("我不想活了", None) is Priority.crisis
    assert adm.priority_of("我不想活了", "rv_other", background=True) is Priority.crisis
    assert adm.priority_of("hello", "rv_abc1234xyz") is Priority.vip
    assert adm.priority_of("hello", "rv_other") is Priority.normal
    assert adm.priority_of(None, None, background=True) is Priority.background


def test_bad_rate_limits_and_unordered_bounds_are_configuration_errors() -> None:
    with pytest.raises(ValueError, match="not a rate limit"):
        AdmissionSettings(per_key="lots")
    with pytest.raises(ValueError, match="min_limit <= initial_limit <= max_limit"):
        AdmissionSettings(initial_limit=100, max_limit=10)


def test_a_limit_is_switched_off_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import make_settings

    monkeypatch.setenv("RAGVIGIL_ADMISSION__PER_KEY", "off")
    monkeypatch.setenv("RAGVIGIL_ADMISSION__PER_USER", "5/second;100/hour")
    s = make_settings(tmp_path).admission
    assert s.per_key is None and s.per_user == "5/second;100/hour"
