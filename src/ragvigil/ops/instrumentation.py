"""The process-wide switch for metrics, traces and per-request log lines, and their deferred bookkeeping.

``enabled`` exists to measure what observability costs (``bench/overhead.py`` runs the same load
with it on and off); production keeps it on.

``later`` is how the request path records what happened: with a background writer running
(``ragvigil serve``: the log writer, ``configure_logging(flush_interval > 0)``) the call is queued and
the writer applies the queue in a batch — Prometheus observations, spans into the trace store and the
OTLP exporter — so a request pays for an append, not for the bookkeeping. Measured in a running
server, the same work done inline cost about three times as much CPU as in a batch (the event loop
thread switches between requests and finds nothing in cache). Readers never see a stale view: a
registry collection (``/metrics``, the alert sampler) and the trace store ``drain`` the queue first.
Without a writer (tests, the CLI) ``later`` runs the call at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

enabled: bool = True
MAX_QUEUED = 100_000  # ~20,000 requests' worth
_deferring = False
_queue: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()


def configure(on: bool) -> None:
    global enabled
    enabled = on


def later(fn: Callable[..., None], *args: Any) -> None:
    """``fn(*args)`` now, or in the next batch when a writer drains the queue."""
    if _deferring and len(_queue) < MAX_QUEUED:
        _queue.append((fn, args))
    else:  # no writer, or it is behind: the caller does the work (memory stays bounded)
        fn(*args)


def drain() -> None:
    """Apply everything queued, oldest first (safe from several threads: each call is taken once)."""
    queue = _queue
    while queue:
        try:
            fn, args = queue.popleft()
        except IndexError:  # another thread took the last one
            return
        fn(*args)


def defer_to_writer(on: bool) -> None:
    """Queue ``later`` calls (a writer drains them) or run them at once; switching off drains what is left."""
    global _deferring
    _deferring = on
    if not on:
        drain()
