"""Feature switches as events on the timeline of every unresolved incident.

Why off the caller's thread: a switch happens on the event loop in the middle of an overload; the
database write must not hold the loop, and a database that is down must not stop the switch.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from ragvigil.ops.admission.features import Switch
from ragvigil.ops.alerts.incidents import IncidentStore

log = logging.getLogger(__name__)

MAX_INCIDENTS = 20  # open incidents told about one switch


class IncidentTimeline:
    def __init__(self, store: IncidentStore) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="feature-timeline")

    def __call__(self, switch: Switch) -> None:
        self._pool.submit(self._write, switch)

    def _write(self, switch: Switch) -> None:
        try:
            unresolved = self.store.list("open", MAX_INCIDENTS) + self.store.list("acknowledged", MAX_INCIDENTS)
            for incident in unresolved[:MAX_INCIDENTS]:
                self.store.add_event(
                    incident["id"],
                    "feature_" + ("restored" if switch.enabled else "shed"),
                    {"feature": switch.feature, "enabled": switch.enabled, "reason": switch.reason},
                    actor=switch.by,
                )
        except Exception as exc:
            log.warning("feature_switch_not_on_timeline", extra={"feature": switch.feature, "error": str(exc)[:300]})

    def flush(self) -> None:
        """Wait for the writes submitted so far (tests, shutdown)."""
        self._pool.submit(lambda: None).result(timeout=30)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
