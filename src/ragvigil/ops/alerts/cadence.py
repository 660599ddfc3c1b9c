"""When each rule group is due: a group's own ``interval`` (as in a Prometheus rule file), else the default.

Why: P1 rules must notice a fault within seconds (their ``for`` then keeps blips away), while the
slow rules (rates over minutes) gain nothing from being evaluated every second. One loop runs at the
shortest interval and evaluates only the groups that are due, so the fast groups cost only their own
rules. Pure arithmetic on the times it is given, so it is tested without a clock.
"""

from __future__ import annotations

from collections.abc import Mapping


class Cadence:
    """The groups due at ``t``; a group counts as due half a step early, so loop jitter never skips a turn."""

    def __init__(self, intervals: Mapping[str, float | None], default: float) -> None:
        self.default = default
        self.intervals: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self.replace(intervals)

    def replace(self, intervals: Mapping[str, float | None]) -> None:
        """New groups (a reloaded rule file); a group that stays keeps its schedule."""
        self.intervals = {g: (i if i else self.default) for g, i in intervals.items()}
        self._last = {g: t for g, t in self._last.items() if g in self.intervals}

    @property
    def step(self) -> float:
        """How often the loop wakes: the shortest interval (never longer than the default)."""
        return min([self.default, *self.intervals.values()])

    def due(self, t: float) -> set[str]:
        """The groups to evaluate at ``t``, marked as evaluated."""
        slack = self.step / 2
        out = {g for g, every in self.intervals.items() if g not in self._last or t - self._last[g] >= every - slack}
        for g in out:
            self._last[g] = t
        return out
