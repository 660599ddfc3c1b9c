"""The safety canary (``rt.canary``): known crisis and benign probes through the live safety check.

``build_canary(settings, check, embed)`` gives the runtime its ``SafetyCanary`` (None when
``canary.enabled`` is off); ``probe_outcome(check, text)`` is the decision the chat path makes from a
verdict (``crisis`` | ``flagged`` | ``clear``), shared so the canary tests exactly what users get.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ragvigil.ops.canary.probes import CanaryProbesInvalid, Probe, load_probes, parse_probes
from ragvigil.ops.canary.runner import OUTCOMES, CanaryRun, SafetyCanary, outcome_of, probe_outcome

if TYPE_CHECKING:
    import numpy as np

    from ragvigil.chat.understanding import SafetyCheck
    from ragvigil.config import Settings

__all__ = [
    "OUTCOMES",
    "CanaryProbesInvalid",
    "CanaryRun",
    "Probe",
    "SafetyCanary",
    "build_canary",
    "load_probes",
    "outcome_of",
    "parse_probes",
    "probe_outcome",
]


def build_canary(
    settings: Settings,
    check: Callable[[], SafetyCheck | None],
    embed: Callable[[str], np.ndarray] | None = None,
) -> SafetyCanary | None:
    """The canary of one instance; raises CanaryProbesInvalid for a probe file it cannot use."""
    c = settings.canary
    if not c.enabled:
        return None
    return SafetyCanary(check, load_probes(c.probes_file), interval_s=c.interval_s, timeout_s=c.timeout_s, embed=embed)
