"""How long a request may wait for a slot and how many may wait: from the turn's budget, by Little's law.

Why not fixed numbers: a queue of 32 waiting at most 0.5 s shed closed-loop clients an instance could
serve well within their budget (50 clients of repeated questions: 15 answers/s and 4,338 503s in a
benchmark level; 256 waiting up to 5 s: 50 answers/s and none), and the same 32 are half a second
of work at 60 answers/s but a tenth of one at 300. What a queued request needs is to *start* early enough to finish within its turn budget,
so:

- the wait: a share of the turn budget (``wait_share``; 0.02 of the default 60 s is 1.2 s), never
  more than what the budget leaves after one request's own service time. It is what an admitted turn
  may spend queued on top of its own time, so it stays under the burst drill's admitted p95 of 2 s: at
  3 s a burst of ten times the capacity was queued whole and answered in up to 3 s, never shed. At
  1.5 s, 50 closed-loop clients of repeated questions on a busy 2-core machine were still shed now
  and then (11-21 waited it out in 8 s levels, 85-127 more were refused by the prediction) while the
  turns' writer stalled for more than a second at a time, before turns were written with a fixed
  number of Core statements per batch. Once the burst generator gave each request a connection of its
  own, 1.5 s left admitted p95 at 1.6-2.2 s (the time before a request reaches the queue comes on
  top); 1.2 s gave 1.3 s with the same goodput;
- the queue: the queue drains at ``limit / service time`` requests a second (Little's law: in flight =
  throughput × latency; or faster, when the answers measured per second say so), so at most
  ``throughput × wait`` waiters can start within the wait; a longer line only holds requests that
  will time out, and ``max_queue`` bounds it whatever the numbers say.

Pure functions of plain numbers, so they are tested with made-up ones; ``QueueSizing`` reads the
limiter's current limit and latency when asked.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

MIN_WAIT_S = 0.05  # below this no request could be queued at all, whatever the budget


def wait_budget_s(turn_budget_s: float, service_s: float, wait_share: float) -> float:
    """Seconds a request may wait for a slot: ``wait_share`` of its budget, and never past what the
    budget leaves once its own service time is counted."""
    left = turn_budget_s - max(service_s, 0.0)
    return max(MIN_WAIT_S, min(turn_budget_s * wait_share, left))


def queue_bound(limit: int, drain_per_s: float, wait_s: float, max_queue: int) -> int:
    """Waiters that can start within ``wait_s`` when the line drains at ``drain_per_s`` (Little's law:
    ``limit / latency``, or the answers measured per second).

    With nothing measured yet (``drain_per_s`` 0) nothing says how fast the line drains: the limit
    itself is the bound (one round of slots), never 0, so a first burst can still queue.
    """
    if drain_per_s <= 0 or math.isnan(drain_per_s):
        return max(1, min(limit, max_queue))
    return max(1, min(max_queue, math.floor(drain_per_s * wait_s)))


@dataclass
class QueueSizing:
    """The queue's size and wait now: fixed when configured, else from the budget and the limiter.

    ``limit``, ``service_s`` and ``drain_per_s`` are read at each call (the adaptive limit, its
    short-term latency and ``GradientLimiter.drain_per_s``).
    """

    turn_budget_s: float
    wait_share: float
    max_queue: int
    limit: Callable[[], int]
    service_s: Callable[[], float]
    drain_per_s: Callable[[], float]
    fixed_size: int | None = None
    fixed_wait_s: float | None = None

    def wait_s(self) -> float:
        if self.fixed_wait_s is not None:
            return self.fixed_wait_s
        return wait_budget_s(self.turn_budget_s, self.service_s(), self.wait_share)

    def size(self, wait_s: float | None = None) -> int:
        if self.fixed_size is not None:
            return self.fixed_size
        wait = self.wait_s() if wait_s is None else wait_s
        return queue_bound(self.limit(), self.drain_per_s(), wait, self.max_queue)

    def __call__(self) -> tuple[int, float]:
        """(queue size, wait in seconds) as they are now."""
        wait = self.wait_s()
        return self.size(wait), wait

    @property
    def derived(self) -> bool:
        return self.fixed_size is None or self.fixed_wait_s is None
