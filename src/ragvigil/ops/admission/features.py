"""Feature flags for non-core work that can be switched off under load and back on after.

Why a registry and not booleans in settings: the admission controller, an operator (``PUT
/api/v1/ops/features/{name}``) and remediation actions all switch the same flags at run time, and
each switch must be visible (log line, metric, incident timeline). The automatic controller only
restores what it shed itself, so an operator's decision is never undone behind their back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ragvigil.ops import metrics

log = logging.getLogger(__name__)

CONTEXTUAL_SEARCH = "contextual_search"  # the follow-up second search of the Retrieve stage
STREAM_EXTRAS = "stream_extras"  # a stream's answer piece by piece; shed: one delta once it is complete
# No ``analytics_writes``: a turn writes nothing but itself (never shed: an accepted message is never
# lost), the encrypted contents log an operator asked for, and the metrics, spans and log lines
# operators need most under load. A flag with no work behind it would be a switch that does nothing.
FEATURES = (CONTEXTUAL_SEARCH, STREAM_EXTRAS)


class UnknownFeature(LookupError):
    """A flag name that is not one of ``FEATURES``."""


@dataclass(frozen=True)
class Switch:
    """One change of a flag: what observers (log, timeline) are told."""

    feature: str
    enabled: bool
    reason: str
    by: str
    at: float


@dataclass
class _Flag:
    enabled: bool = True
    reason: str = ""
    by: str | None = None
    since: float | None = None


class FeatureFlags:
    """Thread-safe: the pipeline reads flags from worker threads, the controller switches them from the loop."""

    def __init__(
        self,
        names: Iterable[str] = FEATURES,
        observers: Iterable[Callable[[Switch], None]] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._flags = {n: _Flag() for n in names}
        self._observers = list(observers)
        self._clock = clock
        self._lock = threading.Lock()
        for n in self._flags:
            metrics.FEATURE_ENABLED.labels(n).set(1)

    def observe(self, observer: Callable[[Switch], None]) -> None:
        self._observers.append(observer)

    def enabled(self, name: str) -> bool:
        flag = self._flags.get(name)
        if flag is None:
            raise UnknownFeature(name)
        return flag.enabled

    def shed(self, name: str, reason: str, by: str) -> bool:
        """Switch ``name`` off; True if it was on."""
        return self._set(name, False, reason, by)

    def restore(self, name: str, by: str, reason: str = "") -> bool:
        """Switch ``name`` back on; True if it was off."""
        return self._set(name, True, reason, by)

    def shed_by(self, name: str) -> str | None:
        """Who switched ``name`` off (None while it is on)."""
        flag = self._flags.get(name)
        if flag is None:
            raise UnknownFeature(name)
        return None if flag.enabled else flag.by

    def status(self) -> list[dict[str, object]]:
        with self._lock:
            return [
                {"name": n, "enabled": f.enabled, "reason": f.reason, "by": f.by, "since": f.since}
                for n, f in self._flags.items()
            ]

    def _set(self, name: str, enabled: bool, reason: str, by: str) -> bool:
        with self._lock:
            flag = self._flags.get(name)
            if flag is None:
                raise UnknownFeature(name)
            if flag.enabled == enabled:
                return False
            now = self._clock()
            flag.enabled, flag.reason, flag.by, flag.since = enabled, reason, by, now
        metrics.FEATURE_ENABLED.labels(name).set(1 if enabled else 0)
        metrics.FEATURE_SWITCHES.labels(name, "on" if enabled else "off").inc()
        log.warning("feature_switched", extra={"feature": name, "enabled": enabled, "reason": reason, "by": by})
        switch = Switch(name, enabled, reason, by, now)
        for observer in self._observers:
            try:
                observer(switch)
            except Exception:
                log.exception("feature_switch_observer_failed")
        return True
