"""When to shed non-core features and when to bring them back: pressure held for a while, calm held longer.

Why hysteresis: one queued request is not an overload, and switching features back on the moment the
queue empties would switch them off again with the next request; an operator watching the timeline
should see one "off" per overload and one "on" after it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from ragvigil.ops.admission.features import FEATURES, FeatureFlags

ACTOR = "admission"


class PressureMonitor:
    def __init__(
        self,
        flags: FeatureFlags,
        shed_after_s: float,
        restore_after_s: float,
        features: Iterable[str] = FEATURES,
    ) -> None:
        self.flags = flags
        self.shed_after_s = shed_after_s
        self.restore_after_s = restore_after_s
        self.features = tuple(features)
        self.pressured_since: float | None = None
        self.calm_since: float | None = None
        self.shedding = False
        self.last_reason = ""
        self._lock = threading.Lock()

    def observe(self, pressured: bool, now: float, reason: str = "") -> None:
        """One look at the load (``pressured``: requests wait, or the limit is reached) at time ``now``."""
        with self._lock:
            if pressured:
                self.calm_since = None
                if self.pressured_since is None:
                    self.pressured_since = now
                self.last_reason = reason or self.last_reason
                start = not self.shedding and now - self.pressured_since >= self.shed_after_s
                stop = False
                if start:
                    self.shedding = True
            else:
                self.pressured_since = None
                if self.calm_since is None:
                    self.calm_since = now
                start = False
                stop = self.shedding and now - self.calm_since >= self.restore_after_s
                if stop:
                    self.shedding = False
        if start:
            why = f"load: {self.last_reason}" if self.last_reason else "load"
            for name in self.features:
                self.flags.shed(name, why, ACTOR)
        if stop:
            for name in self.features:
                if self.flags.shed_by(name) == ACTOR:  # an operator's own switch stays as they left it
                    self.flags.restore(name, ACTOR, "load fell")

    def state(self) -> dict[str, object]:
        with self._lock:
            return {
                "shedding": self.shedding,
                "pressured_since": self.pressured_since,
                "calm_since": self.calm_since,
                "shed_after_s": self.shed_after_s,
                "restore_after_s": self.restore_after_s,
            }
