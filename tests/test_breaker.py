"""The circuit breaker against a plain model of Resilience4j's rules (hypothesis state machine), plus the
cases worth reading on their own and a many-thread run that must keep the half-open bound."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ragvigil.providers.breaker import BreakerConfig, CircuitBreaker, Permit, State


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


CONFIG = BreakerConfig(
    window_size=4,
    minimum_calls=2,
    failure_rate=0.5,
    slow_call_rate=0.75,
    slow_call_s=2.0,
    open_s=10.0,
    half_open_calls=2,
)


@dataclass
class Model:
    """The rules written as plainly as possible: a list for the window, counters for the probes, the
    calls in flight by number (a call running ``slow_call_s`` is counted slow then, not when it ends)."""

    cfg: BreakerConfig
    state: str = "closed"
    epoch: int = 0
    window: list[list[bool]] = field(default_factory=list)  # [failed, slow] per call
    opened_at: float = 0.0
    issued: int = 0
    ok: int = 0
    forced: str | None = None
    serial: int = 0
    running: dict[int, float] = field(default_factory=dict)  # watched calls: when each started
    counted: dict[int, list[bool]] = field(default_factory=dict)  # counted slow while running: their entry

    def go(self, to: str, now: float) -> None:
        self.state, self.epoch, self.issued, self.ok = to, self.epoch + 1, 0, 0
        self.running, self.counted = {}, {}
        if to == "open":
            self.opened_at = now
        if to == "closed":
            self.window = []

    def trips(self) -> bool:
        n = len(self.window)
        return n >= self.cfg.minimum_calls and (
            sum(f for f, _ in self.window) / n >= self.cfg.failure_rate
            or sum(s for _, s in self.window) / n >= self.cfg.slow_call_rate
        )

    def add(self, entry: list[bool]) -> None:
        self.window = [*self.window, entry][-self.cfg.window_size :]

    def overdue(self, now: float) -> None:
        for serial, started in sorted(self.running.items()):
            if now - started < self.cfg.slow_call_s:
                continue
            del self.running[serial]
            if self.state == "half_open":
                self.go("open", now)
                return
            entry = [False, True]
            self.add(entry)
            self.counted[serial] = entry
            if self.trips():
                self.go("open", now)
                return

    def acquire(self, now: float) -> int | None:
        """The permit's number (0: not watched), or None: refused."""
        if self.forced:
            return 0 if self.forced == "closed" else None
        self.overdue(now)
        if self.state == "open":
            if now - self.opened_at < self.cfg.open_s:
                return None
            self.go("half_open", now)
        if self.state == "half_open":
            if self.issued >= self.cfg.half_open_calls:
                return None
            self.issued += 1
        self.serial += 1
        self.running[self.serial] = now
        return self.serial

    def record(self, serial: int, epoch: int, ok: bool, took: float, now: float) -> None:
        if epoch != self.epoch:
            return
        self.running.pop(serial, None)
        if self.forced:
            return
        slow = took >= self.cfg.slow_call_s
        if serial in self.counted:
            self.counted.pop(serial)[0] = not ok
            if self.state == "closed" and self.trips():
                self.go("open", now)
        elif self.state == "half_open":
            if not ok or slow:
                self.go("open", now)
            else:
                self.ok += 1
                if self.ok >= self.cfg.half_open_calls:
                    self.go("closed", now)
        elif self.state == "closed":
            self.add([not ok, slow])
            if self.trips():
                self.go("open", now)


@dataclass
class Call:
    permit: Permit
    epoch: int  # the model's epoch when it was issued
    first_after: float | None = None  # a stream's time to its first delta, once it answered


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.transitions: list[tuple[State, State]] = []
        self.breaker = CircuitBreaker(
            CONFIG, clock=self.clock, on_transition=lambda a, b: self.transitions.append((a, b))
        )
        self.model = Model(CONFIG)
        self.pending: list[Call] = []

    @rule()
    def acquire(self) -> None:
        expected = self.model.acquire(self.clock.now)
        permit = self.breaker.acquire()
        assert (permit is not None) == (expected is not None)
        if permit is not None:
            assert permit.serial == expected
            self.pending.append(Call(permit, self.model.epoch))

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), ok=st.booleans())
    def finish(self, data: st.DataObject, ok: bool) -> None:
        call = self.pending.pop(data.draw(st.integers(0, len(self.pending) - 1)))
        took = self.clock.now - call.permit.started if call.first_after is None else call.first_after
        self.model.record(call.permit.serial, call.epoch, ok, took, self.clock.now)
        self.breaker.record(call.permit, ok, took)

    @precondition(lambda self: any(c.first_after is None for c in self.pending))
    @rule(data=st.data())
    def first_delta(self, data: st.DataObject) -> None:
        waiting = [c for c in self.pending if c.first_after is None]
        call = waiting[data.draw(st.integers(0, len(waiting) - 1))]
        call.first_after = self.clock.now - call.permit.started
        self.model.running.pop(call.permit.serial, None)
        self.breaker.answering(call.permit)

    @rule()
    def watch(self) -> None:  # the router's periodic look at the calls in flight
        if not self.model.forced:
            self.model.overdue(self.clock.now)
        self.breaker.count_overdue()

    @rule(seconds=st.sampled_from([0.5, 1.5, 3.0, 9.99, 10.0, 25.0]))
    def wait(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule(to=st.sampled_from(["open", "closed", "auto"]))
    def force(self, to: str) -> None:
        self.breaker.force(to)  # type: ignore[arg-type]
        self.model.forced = None if to == "auto" else to
        self.model.go("open" if to == "open" else "closed", self.clock.now)

    @invariant()
    def same_state(self) -> None:
        assert self.breaker.state.label == self.model.state

    @invariant()
    def half_open_admits_a_bounded_number_of_probes(self) -> None:
        if self.breaker.state is State.HALF_OPEN:
            live = sum(1 for c in self.pending if c.permit.probe and c.permit.epoch == self.model.epoch)
            assert live <= CONFIG.half_open_calls

    @invariant()
    def open_refuses_during_the_cool_down(self) -> None:
        if self.model.state == "open" and self.clock.now - self.model.opened_at < CONFIG.open_s:
            assert not self.breaker.would_permit()

    @invariant()
    def transitions_are_real_and_chained(self) -> None:
        for (a, b), (c, _) in zip(self.transitions, self.transitions[1:], strict=False):
            assert a is not b and b is c
        legal = {(State.CLOSED, State.OPEN), (State.OPEN, State.HALF_OPEN), (State.HALF_OPEN, State.OPEN)}
        legal |= {(State.HALF_OPEN, State.CLOSED), (State.OPEN, State.CLOSED), (State.HALF_OPEN, State.OPEN)}
        assert all(t in legal for t in self.transitions)


BreakerMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
test_breaker_matches_the_model = BreakerMachine.TestCase


UNIT = BreakerConfig(
    window_size=5,
    minimum_calls=3,
    failure_rate=0.5,
    slow_call_rate=0.6,
    slow_call_s=2.0,
    open_s=10.0,
    half_open_calls=2,
)


def _breaker(**kw: object) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker(BreakerConfig(**{**UNIT.__dict__, **kw}), clock=clock), clock  # type: ignore[arg-type]


def _calls(b: CircuitBreaker, outcomes: list[tuple[bool, float]]) -> None:
    for ok, took in outcomes:
        permit = b.acquire()
        assert permit is not None
        b.record(permit, ok, took)


def test_no_verdict_before_the_minimum_number_of_calls() -> None:
    b, _ = _breaker()
    _calls(b, [(False, 0.1), (False, 0.1)])
    assert b.state is State.CLOSED
    _calls(b, [(False, 0.1)])
    assert b.state is State.OPEN


def test_slow_calls_alone_open_it() -> None:
    b, _ = _breaker()
    _calls(b, [(True, 0.1), (True, 3.0), (True, 0.1), (True, 3.0)])  # 2 of 4 slow: below 0.6
    assert b.state is State.CLOSED
    _calls(b, [(True, 3.0)])  # 3 of 5 slow: 0.6, every call a success
    assert b.state is State.OPEN


def test_cool_down_then_probes_close_it_and_one_bad_probe_reopens() -> None:
    b, clock = _breaker()
    _calls(b, [(False, 0.1)] * 3)
    assert b.acquire() is None
    clock.now += UNIT.open_s
    first, second = b.acquire(), b.acquire()
    assert first is not None and second is not None and b.acquire() is None  # two probes, no more
    assert b.state is State.HALF_OPEN
    b.record(first, True, 0.1)
    b.record(second, False, 0.1)
    assert b.state is State.OPEN and b.acquire() is None
    clock.now += UNIT.open_s
    _calls(b, [(True, 0.1), (True, 0.1)])
    assert b.state is State.CLOSED


def test_a_late_result_from_before_the_opening_is_ignored() -> None:
    b, clock = _breaker()
    early = b.acquire()
    assert early is not None
    _calls(b, [(False, 0.1)] * 3)
    clock.now += UNIT.open_s
    probe = b.acquire()
    assert probe is not None and b.state is State.HALF_OPEN
    b.record(early, False, 0.1)  # started while closed: says nothing about the half-open provider
    assert b.state is State.HALF_OPEN


def test_forced_open_refuses_until_auto() -> None:
    b, clock = _breaker()
    b.force("open")
    clock.now += 1000
    assert b.acquire() is None
    b.force("auto")
    assert b.state is State.CLOSED and b.acquire() is not None


@pytest.mark.parametrize("probes", [1, 3])
def test_half_open_bound_holds_across_threads(probes: int) -> None:
    b, clock = _breaker(half_open_calls=probes)
    _calls(b, [(False, 0.1)] * 3)
    clock.now += UNIT.open_s
    got: list[Permit] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def worker() -> None:
        start.wait()
        for _ in range(50):
            p = b.acquire()
            if p is not None:
                with lock:
                    got.append(p)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == probes


def test_coroutines_and_threads_share_one_breaker_without_blocking_the_loop() -> None:
    """Probes are bounded across an event loop and threads at once; a coroutine never waits on the lock
    across a call (it awaits between acquire and record)."""
    import asyncio

    b, clock = _breaker(half_open_calls=2)
    _calls(b, [(False, 0.1)] * 3)
    clock.now += UNIT.open_s
    granted: list[Permit] = []

    async def caller() -> None:
        for _ in range(20):
            p = b.acquire()
            await asyncio.sleep(0)  # the "call": other coroutines and threads run meanwhile
            if p is not None:
                granted.append(p)

    async def main() -> None:
        threads = [threading.Thread(target=lambda: [granted.append(p) for p in [b.acquire()] if p]) for _ in range(8)]
        for t in threads:
            t.start()
        await asyncio.gather(*(caller() for _ in range(16)))
        for t in threads:
            t.join()

    asyncio.run(main())
    assert len(granted) == 2 and b.state is State.HALF_OPEN
    for p in granted:
        b.record(p, True, 0.1)
    assert b.state is State.CLOSED


def test_calls_still_running_at_slow_call_s_open_it_before_they_end() -> None:
    """A hanging endpoint trips the breaker once its calls have run ``slow_call_s``, not at their timeout."""
    b, clock = _breaker()
    hanging = [b.acquire() for _ in range(3)]
    assert all(hanging)
    clock.now += UNIT.slow_call_s - 0.01
    b.count_overdue()
    assert b.state is State.CLOSED and b.snapshot()["window_calls"] == 0
    clock.now += 0.01
    b.count_overdue()  # 3 calls in flight for slow_call_s: 3 of 3 slow
    assert b.state is State.OPEN and b.acquire() is None


def test_a_call_counted_slow_while_running_that_then_fails_counts_as_a_failure() -> None:
    b, clock = _breaker()
    _calls(b, [(True, 0.1), (False, 0.1)])
    hanging = b.acquire()
    assert hanging is not None
    clock.now += UNIT.slow_call_s
    b.count_overdue()  # [ok, failed, slow]: 1 of 3 failed, 1 of 3 slow
    assert b.state is State.CLOSED and b.snapshot()["slow_rate"] == pytest.approx(1 / 3, abs=1e-3)
    b.record(hanging, False)  # it timed out: 2 of 3 failed, and it is not counted twice
    assert b.state is State.OPEN


def test_a_stream_that_has_started_answering_is_not_counted_slow() -> None:
    b, clock = _breaker()
    streams = [b.acquire() for _ in range(3)]
    for permit in streams:
        assert permit is not None
        b.answering(permit)  # first delta at once; the stream then goes on for a long time
    clock.now += 10 * UNIT.slow_call_s
    b.count_overdue()
    assert b.acquire() is not None and b.snapshot()["window_calls"] == 0
    for permit in streams:
        assert permit is not None
        b.record(permit, True, 0.1)
    assert b.state is State.CLOSED and b.snapshot()["slow_rate"] == 0
