"""A background job run every few seconds on a daemon thread of its own, failures logged, never raised.

Why: several owners keep something fresh in the background (the journal replay, log retention, the
pending-vectors gauge). Each gets its own ``Periodic`` instead of sharing one loop in the runtime, so
a slow job (a database that hangs) never delays the others and each owner starts and stops its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from ragvigil.ops import metrics

log = logging.getLogger(__name__)


class Periodic:
    """Calls ``job`` every ``interval_s`` seconds (first call after one interval, or at once)."""

    def __init__(self, name: str, interval_s: float, job: Callable[[], object], *, run_at_start: bool = False) -> None:
        self.name = name
        self.interval_s = interval_s
        self.job = job
        self.run_at_start = run_at_start
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> bool:
        """One call of the job; False (logged, database errors counted) when it raised."""
        try:
            self.job()
        except Exception as exc:
            if isinstance(exc, SQLAlchemyError):
                metrics.DATABASE_ERRORS.labels("background").inc()
            log.warning("background_task_failed", extra={"task": self.name, "error": str(exc)[:500]})
            return False
        return True

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the loop to end and wait a bounded time (a job stuck in I/O ends with the process)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        if self.run_at_start:
            self.run_once()
        while not self._stop.wait(self.interval_s):
            self.run_once()
