"""A circuit breaker per provider, with Resilience4j's semantics, safe for threads and asyncio alike.

Why written here: pybreaker and aiobreaker hold their state without a lock usable from both worlds
(pybreaker's lock is held across the call; aiobreaker is not thread-safe) and neither has a
slow-call rate. This one never runs the call itself: a caller asks for a :class:`Permit`, makes the
call however it likes (thread, coroutine, stream) and reports how it went. A ``threading.Lock`` is
held only while the state is read or updated, never across a call, so an event loop never blocks on
it for more than a few instructions.

Semantics (Resilience4j's count-based sliding window):

* CLOSED: every call is permitted; the last ``window_size`` outcomes are kept. Once at least
  ``minimum_calls`` are in the window, the breaker opens when the failure rate reaches
  ``failure_rate`` or the slow-call rate (calls that took at least ``slow_call_s``, failed or not)
  reaches ``slow_call_rate``.
* OPEN: no call is permitted for ``open_s`` seconds; the first request after that moves to HALF_OPEN.
* HALF_OPEN: at most ``half_open_calls`` probes are permitted. If every probe succeeds (and none is
  slow) the breaker closes with an empty window; the first probe that fails or is slow opens it again.
* A call still running ``slow_call_s`` after its permit is slow already: ``count_overdue`` (run by the
  router every fraction of a second, and by every ``acquire``) counts it then, instead of when it
  ends. A hanging endpoint trips the breaker after ``slow_call_s``, not after its whole timeout; a
  counted call that then fails is counted a failure too. A stream stops being watched at its first
  delta (``answering``): its slowness is its time to the first delta. (Resilience4j counts a call
  when it ends.)
* A result reported for a permit issued in an earlier state (a call that started before the breaker
  opened) is ignored: it says nothing about the provider now.
* An operator may force it open or closed; a forced breaker makes no transition by itself until it
  is set back to automatic (which starts CLOSED with an empty window).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal


class State(IntEnum):
    """The values of ``ragvigil_provider_breaker_state``."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class BreakerConfig:
    window_size: int = 20
    minimum_calls: int = 5
    failure_rate: float = 0.5
    slow_call_rate: float = 0.8
    slow_call_s: float = 10.0
    open_s: float = 30.0
    half_open_calls: int = 2

    def __post_init__(self) -> None:
        if not 1 <= self.minimum_calls <= self.window_size:
            raise ValueError("minimum_calls must be between 1 and window_size")
        if self.half_open_calls < 1 or self.open_s < 0 or self.slow_call_s <= 0:
            raise ValueError("half_open_calls >= 1, open_s >= 0 and slow_call_s > 0 are required")
        if not (0 < self.failure_rate <= 1 and 0 < self.slow_call_rate <= 1):
            raise ValueError("failure_rate and slow_call_rate are fractions in (0, 1]")


@dataclass(frozen=True)
class Permit:
    """Leave to make one call; ``epoch`` ties its result to the state it was issued in."""

    epoch: int
    probe: bool
    started: float
    serial: int = 0  # which call, among those in flight (0: not watched for overdue)


Transition = Callable[[State, State], None]
Forced = Literal["open", "closed"] | None


class CircuitBreaker:
    def __init__(
        self,
        config: BreakerConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Transition | None = None,
    ) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self._on_transition = on_transition
        self._lock = threading.Lock()
        self._state = State.CLOSED
        self._epoch = 0
        self._window: deque[list[bool]] = deque(maxlen=self.config.window_size)  # [failed, slow] per call
        self._serial = 0
        self._running: dict[int, Permit] = {}  # calls of this epoch in flight, not yet counted slow
        self._counted: dict[int, list[bool]] = {}  # calls counted slow while in flight: their window entry
        self._opened_at: float | None = None
        self._probes_issued = 0
        self._probes_ok = 0
        self._forced: Forced = None
        self._calls = 0  # every result recorded, for status

    # --- the call path ------------------------------------------------------------------------
    def acquire(self) -> Permit | None:
        """A permit for one call now, or None: the caller must not call (fail over instead)."""
        with self._lock:
            now = self._clock()
            if self._forced == "open":
                return None
            if self._forced == "closed":
                return Permit(self._epoch, False, now)
            moved = [self._count_overdue(now)]
            permit: Permit | None = None
            if self._state is State.OPEN:
                assert self._opened_at is not None
                if now - self._opened_at >= self.config.open_s:
                    moved.append(self._move(State.HALF_OPEN))
            if self._state is State.HALF_OPEN:
                if self._probes_issued < self.config.half_open_calls:
                    self._probes_issued += 1
                    permit = self._issue(True, now)
            elif self._state is State.CLOSED:
                permit = self._issue(False, now)
        self._notify(*moved)
        return permit

    def count_overdue(self) -> None:
        """Count every call in flight for ``slow_call_s`` or longer as slow now (opening if that trips it)."""
        with self._lock:
            moved = None if self._forced is not None else self._count_overdue(self._clock())
        self._notify(moved)

    def answering(self, permit: Permit) -> None:
        """The call has started answering (a stream's first delta): it can no longer be overdue."""
        with self._lock:
            self._running.pop(permit.serial, None)

    def record(self, permit: Permit, ok: bool, duration_s: float | None = None) -> None:
        """How the permitted call went; ``duration_s`` defaults to the time since the permit."""
        moved: tuple[State, State] | None = None
        with self._lock:
            now = self._clock()
            if permit.epoch != self._epoch:
                return  # issued before the last transition or force
            self._running.pop(permit.serial, None)
            self._calls += 1
            if self._forced is not None:
                return
            elapsed = now - permit.started if duration_s is None else duration_s
            slow = elapsed >= self.config.slow_call_s
            if (entry := self._counted.pop(permit.serial, None)) is not None:
                entry[0] = not ok  # counted slow while it ran; now also whether it failed
                if self._state is State.CLOSED and self._should_open():
                    moved = self._move(State.OPEN)
            elif self._state is State.HALF_OPEN:
                if not ok or slow:
                    moved = self._move(State.OPEN)
                else:
                    self._probes_ok += 1
                    if self._probes_ok >= self.config.half_open_calls:
                        moved = self._move(State.CLOSED)
            elif self._state is State.CLOSED:
                self._window.append([not ok, slow])
                if self._should_open():
                    moved = self._move(State.OPEN)
        self._notify(moved)

    def release(self, permit: Permit) -> None:
        """The permitted call was not made after all (e.g. no time left): a probe slot is given back."""
        with self._lock:
            self._running.pop(permit.serial, None)
            self._counted.pop(permit.serial, None)
            if permit.probe and permit.epoch == self._epoch and self._state is State.HALF_OPEN:
                self._probes_issued -= 1

    # --- operator -----------------------------------------------------------------------------
    def force(self, state: Literal["open", "closed", "auto"]) -> tuple[State, State]:
        """Pin the breaker open or closed, or hand it back to automatic (CLOSED, empty window)."""
        with self._lock:
            before = self._state
            self._forced = None if state == "auto" else state
            target = State.OPEN if state == "open" else State.CLOSED
            self._move(target, force=True)
        self._notify((before, target) if before is not target else None)
        return before, target

    # --- reading ------------------------------------------------------------------------------
    @property
    def state(self) -> State:
        """The state now; an OPEN breaker past its cool-down still reads OPEN until a call arrives."""
        with self._lock:
            return self._state

    def would_permit(self) -> bool:
        """Whether a call now would be permitted, without taking a permit."""
        with self._lock:
            if self._forced is not None:
                return self._forced == "closed"
            if self._state is State.OPEN:
                return self._opened_at is not None and self._clock() - self._opened_at >= self.config.open_s
            if self._state is State.HALF_OPEN:
                return self._probes_issued < self.config.half_open_calls
            return True

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            n = len(self._window)
            failures = sum(1 for f, _ in self._window if f)
            slows = sum(1 for _, s in self._window if s)
            return {
                "state": self._state.label,
                "forced": self._forced,
                "failure_rate": round(failures / n, 4) if n else 0.0,
                "slow_rate": round(slows / n, 4) if n else 0.0,
                "window_calls": n,
                "calls": self._calls,
                "opened_at_monotonic": self._opened_at,
            }

    # --- inside the lock ----------------------------------------------------------------------
    def _issue(self, probe: bool, now: float) -> Permit:
        self._serial += 1
        permit = Permit(self._epoch, probe, now, self._serial)
        self._running[permit.serial] = permit
        return permit

    def _count_overdue(self, now: float) -> tuple[State, State] | None:
        """Count the calls running ``slow_call_s`` or longer as slow; the transition this makes, if any."""
        limit = now - self.config.slow_call_s
        overdue = [p for p in self._running.values() if p.started <= limit]
        moved: tuple[State, State] | None = None
        for permit in overdue:
            del self._running[permit.serial]
            if self._state is State.HALF_OPEN:  # a slow probe: open again (later results are ignored)
                return self._move(State.OPEN)
            if self._state is State.CLOSED:
                entry = [False, True]
                self._window.append(entry)
                self._counted[permit.serial] = entry
                if moved is None and self._should_open():
                    moved = self._move(State.OPEN)
                    break
        return moved

    def _should_open(self) -> bool:
        n = len(self._window)
        if n < self.config.minimum_calls:
            return False
        failures = sum(1 for f, _ in self._window if f)
        slows = sum(1 for _, s in self._window if s)
        return failures / n >= self.config.failure_rate or slows / n >= self.config.slow_call_rate

    def _move(self, to: State, force: bool = False) -> tuple[State, State] | None:
        before = self._state
        self._state = to
        self._epoch += 1
        self._probes_issued = 0
        self._probes_ok = 0
        self._running.clear()  # results of calls issued before now are ignored: nothing to watch
        self._counted.clear()
        if to is State.OPEN:
            self._opened_at = self._clock()
        elif to is State.CLOSED:
            self._opened_at = None
            self._window.clear()
        if force:
            self._window.clear()
        return (before, to) if before is not to else None

    def _notify(self, *transitions: tuple[State, State] | None) -> None:
        """Tell the listener of each transition made (outside the lock: it may read the breaker)."""
        if self._on_transition is not None:
            for moved in transitions:
                if moved is not None:
                    self._on_transition(*moved)
