"""Read a verification signal from the alert engine's signal history: a number, or None for no data.

A signal with no data is never "inside its bounds": a dead signal must not read as healthy.
"""

from __future__ import annotations

import math
from typing import Any

from ragvigil.ops.alerts.promql import Evaluator, PromQLError, SeriesSource


def signal_values(node: Any, source: SeriesSource, t: float) -> list[float]:
    """Every non-NaN value the expression yields at ``t`` (one per series)."""
    try:
        value = Evaluator(source).instant(node, t)
    except (PromQLError, ArithmeticError, ValueError, KeyError):
        return []
    if isinstance(value, float):
        return [] if math.isnan(value) else [value]
    return [v for _, v in value if isinstance(v, float) and not math.isnan(v)]  # type: ignore[misc]


def inside(values: list[float], below: float | None, above: float | None) -> bool:
    """All series within the band (strictly below ``below``, strictly above ``above``)."""
    if not values:
        return False
    return all((below is None or v < below) and (above is None or v > above) for v in values)


def summary(values: list[float], below: float | None) -> float | None:
    """The value to report: the worst series (the highest against ``below``, else the lowest)."""
    if not values:
        return None
    return max(values) if below is not None else min(values)
