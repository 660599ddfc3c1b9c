"""The at-open diagnosis, off the thread that opened the incident.

Why: an incident opens on the alert evaluator's thread or inside the Alertmanager webhook request,
and a diagnosis reads megabytes of logs and runs every health check. Done there, one slow diagnosis
delays every alert of the cycle (or the webhook's answer, which Alertmanager then retries). So the
hook only queues the incident id; one worker thread diagnoses in order. The queue is bounded: when
full the oldest waiting id is dropped (``ragvigil_diagnosis_dropped_total``) — the newest incident is
the one an operator looks at, and a dropped one can still be diagnosed on demand
(``GET /api/v1/ops/incidents/{id}/diagnosis``).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from ragvigil.ops import metrics

log = logging.getLogger(__name__)


class DiagnosisWorker:
    """``submit(incident_id)`` never blocks; the thread starts with the first submission (or ``start``)."""

    def __init__(self, handle: Callable[[str], None], max_queued: int = 64) -> None:
        self.handle = handle  # Diagnoser.incident_opened: diagnoses and writes the timeline, never raises
        self.max_queued = max(1, max_queued)
        self._queue: deque[str] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._stopped = False
        self._thread: threading.Thread | None = None

    def submit(self, incident_id: str) -> None:
        """Queue ``incident_id`` for diagnosis (dropping the oldest waiting one when the queue is full)."""
        with self._cond:
            if self._stopped:
                log.warning("incident_diagnosis_skipped", extra={"incident": incident_id, "why": "stopping"})
                return
            if len(self._queue) >= self.max_queued:
                dropped = self._queue.popleft()
                metrics.DIAGNOSIS_DROPPED.inc()
                log.warning("incident_diagnosis_dropped", extra={"incident": dropped, "queued": self.max_queued})
            self._queue.append(incident_id)
            self._start_locked()
            self._cond.notify()

    def start(self) -> None:
        with self._cond:
            self._start_locked()

    def _start_locked(self) -> None:
        if self._thread is None and not self._stopped:
            self._thread = threading.Thread(target=self._run, name="incident-diagnosis", daemon=True)
            self._thread.start()

    def pending(self) -> int:
        """Incidents waiting or being diagnosed now."""
        with self._cond:
            return len(self._queue) + (1 if self._busy else 0)

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait until nothing waits or runs (tests, shutdown); False if ``timeout_s`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Let the diagnosis in progress finish (bounded); ids still waiting are not diagnosed."""
        with self._cond:
            self._stopped = True
            left = len(self._queue)
            self._queue.clear()
            self._cond.notify_all()
            thread = self._thread
        if left:
            log.warning("incident_diagnosis_skipped", extra={"incidents": left, "why": "stopping"})
        if thread is not None:
            thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stopped)
                if self._stopped:
                    return
                incident_id = self._queue.popleft()
                self._busy = True
            try:
                self.handle(incident_id)
            except Exception:  # the handler never raises; a bug in it must not end the worker
                log.exception("incident_diagnosis_failed", extra={"incident": incident_id})
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
