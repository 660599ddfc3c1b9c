"""The concurrency gate: a limit on requests in flight and a short, bounded priority queue in front of it.

Why not a semaphore: a semaphore wakes waiters in arrival order and lets its queue grow without
bound, so under a burst every request waits out its timeout and then fails. Here the waiting line is
bounded (its size and wait follow the turn budget and the measured latency: ``sizing.QueueSizing``),
ordered by priority then arrival, a full line sheds its lowest waiter (or the newcomer when it is the
lowest), and a request that could not get a slot within the wait anyway (predicted from the queue
ahead of it and the recent latency) is refused at once: shed requests get their 503 fast, admitted
ones keep their latency.

Everything here runs on the event loop's thread (the ASGI middleware calls it), so there is no lock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from ragvigil.ops.admission.limiter import GradientLimiter
from ragvigil.ops.admission.priority import Priority


class Shed(Exception):
    """The request was not admitted: ``reason`` is queue_full, displaced, predicted_wait or timeout."""

    def __init__(self, reason: str, priority: Priority) -> None:
        super().__init__(reason)
        self.reason, self.priority = reason, priority


@dataclass(order=True)
class Waiter:
    sort_key: tuple[int, int]
    priority: Priority = field(compare=False)
    future: asyncio.Future | None = field(default=None, compare=False)
    gone: bool = field(default=False, compare=False)  # granted, shed or timed out: skipped when popped


class WaitQueue:
    """Waiters by (priority desc, arrival asc), bounded; no asyncio in here, so it is tested on its own."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._heap: list[Waiter] = []
        self._seq = itertools.count()
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def make(self, priority: Priority) -> Waiter:
        return Waiter((-int(priority), next(self._seq)), priority)

    def push(self, waiter: Waiter) -> Waiter | None:
        """Queue ``waiter``; when full, returns who is shed instead: the lowest, newest waiter, or ``waiter``."""
        if self._live < self.size:
            self._add(waiter)
            return None
        victim = self.lowest()
        if victim is None or victim.priority >= waiter.priority:
            return waiter
        self.remove(victim)
        self._add(waiter)
        return victim

    def pop(self) -> Waiter | None:
        """The highest-priority, oldest waiter."""
        while self._heap:
            w = heapq.heappop(self._heap)
            if not w.gone:
                w.gone = True
                self._live -= 1
                return w
        return None

    def peek(self) -> Waiter | None:
        """The waiter ``pop`` would return, left in place."""
        while self._heap and self._heap[0].gone:
            heapq.heappop(self._heap)
        return self._heap[0] if self._heap else None

    def remove(self, waiter: Waiter) -> None:
        if not waiter.gone:
            waiter.gone = True
            self._live -= 1

    def lowest(self) -> Waiter | None:
        live = [w for w in self._heap if not w.gone]  # bounded by queue_size
        return max(live, default=None)  # the largest sort key: lowest priority, newest arrival

    def ahead_of(self, priority: Priority) -> int:
        """Waiters that would be served before a newcomer of ``priority``."""
        return sum(1 for w in self._heap if not w.gone and w.priority >= priority)

    def counts(self) -> dict[str, int]:
        out = {p.name: 0 for p in Priority}
        for w in self._heap:
            if not w.gone:
                out[w.priority.name] += 1
        return out

    def _add(self, waiter: Waiter) -> None:
        heapq.heappush(self._heap, waiter)
        self._live += 1
        if len(self._heap) > 4 * max(self.size, 8):  # drop the dead entries now and then
            self._heap = [w for w in self._heap if not w.gone]
            heapq.heapify(self._heap)


@dataclass
class Permit:
    """A slot held by one request; give it back with ``PriorityGate.release``."""

    priority: Priority
    started: float
    sampled: bool = True  # whether its latency feeds the limiter (answers do, background work does not)


class PriorityGate:
    def __init__(
        self,
        limiter: GradientLimiter,
        queue_size: int,
        timeout_s: float,
        clock: Callable[[], float],
        on_shed: Callable[[Shed], None] = lambda _: None,
        on_change: Callable[[], None] = lambda: None,
        sizing: Callable[[], tuple[int, float]] | None = None,
    ) -> None:
        """``sizing``: the queue's (size, wait) as they are now, read at each queued request; without it
        ``queue_size`` and ``timeout_s`` stay as given."""
        self.limiter = limiter
        self.queue = WaitQueue(queue_size)
        self.timeout_s = timeout_s
        self._sizing = sizing
        self.clock = clock
        self.in_flight = 0
        self._on_shed = on_shed
        self._on_change = on_change

    @property
    def limit(self) -> int:
        return self.limiter.limit

    def has_room(self, priority: Priority) -> bool:
        """A crisis turn may use every slot up to ``max_limit``; the others only up to the adaptive limit."""
        ceiling = self.limiter.max_limit if priority is Priority.crisis else self.limiter.limit
        return self.in_flight < ceiling

    def try_acquire(self, priority: Priority, sampled: bool = True) -> Permit | None:
        """A slot now, if one is free and nobody of the same or a higher priority waits for it."""
        if self.has_room(priority) and self.queue.ahead_of(priority) == 0:
            return self._grant(priority, sampled)
        return None

    def saturated(self) -> bool:
        """Every slot taken and someone already waiting: the only state in which a newcomer can be refused."""
        return self.in_flight >= self.limiter.limit and len(self.queue) > 0

    def would_shed(self, priority: Priority, waited_s: float = 0.0) -> bool:
        """Whether a newcomer of ``priority`` that cannot start now is refused at once: it could not get a
        slot within the wait left (``timeout_s`` less ``waited_s``). A crisis turn never is."""
        if priority is Priority.crisis or (self.has_room(priority) and self.queue.ahead_of(priority) == 0):
            return False
        self.resize()
        return self.predicted_wait(priority) > self.timeout_s - max(0.0, waited_s)

    def predicted_wait(self, priority: Priority) -> float:
        """About how long a newcomer would wait: the queue ahead of it, drained at the measured rate."""
        ahead = self.queue.ahead_of(priority) + 1
        rate = self.limiter.drain_per_s()
        return ahead / rate if rate > 0 else 0.0

    async def acquire(self, priority: Priority, sampled: bool = True, waited_s: float = 0.0) -> Permit:
        """A slot, waiting in the queue up to ``timeout_s`` in all; raises ``Shed`` when refused.

        ``waited_s``: time the request already spent in the server before it asked (parsed, then waiting
        for the event loop to run it). Under a flood that is hundreds of milliseconds, and a wait
        counted from the ask alone let admitted turns take the queue's whole wait on top of it (p95
        2.2 s in the 10x drill, over its 2 s target); so the wait left is ``timeout_s - waited_s``."""
        permit = self.try_acquire(priority, sampled)
        if permit is not None:
            return permit
        if self.would_shed(priority, waited_s):
            raise self._shed(Shed("predicted_wait", priority))
        wait_s = self.timeout_s - max(0.0, waited_s)
        loop = asyncio.get_running_loop()
        waiter = self.queue.make(priority)
        waiter.future = loop.create_future()
        victim = self.queue.push(waiter)
        if victim is waiter:
            raise self._shed(Shed("queue_full", priority))
        if victim is not None and victim.future is not None and not victim.future.done():
            victim.future.set_exception(self._shed(Shed("displaced", victim.priority)))
        self._on_change()
        timer = loop.call_later(
            max(wait_s, 0.0) if priority is not Priority.crisis else self.timeout_s, self._expire, waiter
        )
        try:
            await waiter.future
        except asyncio.CancelledError:
            self.queue.remove(waiter)
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.exception() is None:
                self.release(Permit(priority, self.clock(), sampled=False))  # granted as the caller left
            raise
        finally:
            timer.cancel()
        return Permit(priority, self.clock(), sampled)

    def resize(self) -> None:
        """Take the size and wait the sizing gives now (a smaller size sheds nobody already waiting)."""
        if self._sizing is not None:
            self.queue.size, self.timeout_s = self._sizing()

    def release(self, permit: Permit) -> None:
        self.in_flight -= 1
        if permit.sampled:
            now = self.clock()
            self.limiter.sample(now - permit.started, self.in_flight + 1, now)
        self._wake()
        self._on_change()

    def _grant(self, priority: Priority, sampled: bool) -> Permit:
        self.in_flight += 1
        self._on_change()
        return Permit(priority, self.clock(), sampled)

    def _wake(self) -> None:
        while (top := self.queue.peek()) is not None and self.has_room(top.priority):
            self.queue.pop()
            if top.future is not None and not top.future.done():
                self.in_flight += 1
                top.future.set_result(True)

    def _expire(self, waiter: Waiter) -> None:
        if waiter.gone or waiter.future is None or waiter.future.done():
            return
        self.queue.remove(waiter)
        waiter.future.set_exception(self._shed(Shed("timeout", waiter.priority)))
        self._on_change()

    def _shed(self, exc: Shed) -> Shed:
        self._on_shed(exc)
        return exc
