"""A background job that runs only on the leader: started when this replica gains leadership, stopped when
it loses it.

Why a thread of its own for the switch: stopping a job may wait for its current step (a batch of
embeddings, seconds), and the election's thread must keep renewing meanwhile, or the leader would lose
its lease while it is only shutting a job down. The switch asks ``is_leader()`` each time it wakes (on a
change, and every second), so only the current state matters when several changes piled up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ragvigil.ops.leader.leadership import Leadership

log = logging.getLogger(__name__)


class LeaderOnly:
    """``start``/``stop`` like any background job; ``start_job``/``stop_job`` run only while leading."""

    def __init__(
        self, name: str, leadership: Leadership, start_job: Callable[[], None], stop_job: Callable[[], None]
    ) -> None:
        self.name = name
        self.leadership = leadership
        self._start_job, self._stop_job = start_job, stop_job
        self._running = False
        self._active = False  # between start and stop of this wrapper
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        leadership.on_change(self._changed)

    def state(self) -> str:
        """``running`` (this replica leads and runs it), ``standby`` (another replica does) or ``stopped``."""
        if not self._active:
            return "stopped"
        return "running" if self._running else "standby"

    def _changed(self, leading: bool) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._active:
            return
        self._active = True
        self._apply()  # at once: a leader starts its job before the first request, as without an election
        self._thread = threading.Thread(target=self._loop, name=f"leader-only-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._active = False
        self._wake.set()
        if self._thread is not None:
            self._thread.join(15.0)
            self._thread = None
        if self._running:
            self._stop_job()
            self._running = False

    def _apply(self) -> None:
        # asked each time, not taken from the event: a lease that ran out unrenewed (a paused election
        # thread) ends the job too, within a second
        wanted = self._active and self.leadership.is_leader()
        if wanted and not self._running:
            self._start_job()
            self._running = True
            log.info("leader_job_started", extra={"job": self.name})
        elif not wanted and self._running:
            self._stop_job()
            self._running = False
            log.info("leader_job_standby", extra={"job": self.name})

    def _loop(self) -> None:
        while self._active:
            self._wake.wait(1.0)
            self._wake.clear()
            if not self._active:
                return
            try:
                self._apply()
            except Exception:
                log.exception("leader_job_switch_failed", extra={"job": self.name})
