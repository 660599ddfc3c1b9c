"""Admission control: who is let in, in which order, and which non-core work is switched off under load.

The public face, for the middleware, the ops API, remediation actions and drills:

- ``build_admission(settings, db) -> Admission`` (``rt.admission``; its flags are ``rt.features``)
- ``Admission.status()``, ``.priority_of(text, key)``, ``.admit(priority)`` / ``.release(permit)``
- ``FeatureFlags``: ``enabled(name)``, ``shed(name, reason, by)``, ``restore(name, by)``, ``status()``
- ``Priority`` (crisis > vip > normal > background), ``phrase_check`` (the pluggable crisis check)
"""

from __future__ import annotations

from ragvigil.config import AdmissionSettings
from ragvigil.ops import metrics
from ragvigil.ops.admission.controller import DEFAULT_TURN_BUDGET_S, Admission
from ragvigil.ops.admission.features import FEATURES, FeatureFlags, Switch, UnknownFeature
from ragvigil.ops.admission.priority import CrisisCheck, Priority, phrase_check
from ragvigil.ops.admission.queue import Permit, Shed
from ragvigil.ops.admission.ratelimit import RateLimitBackend
from ragvigil.ops.admission.timeline import IncidentTimeline
from ragvigil.ops.alerts.incidents import IncidentStore
from ragvigil.storage.db import Database

__all__ = [
    "FEATURES",
    "Admission",
    "CrisisCheck",
    "FeatureFlags",
    "Permit",
    "Priority",
    "Shed",
    "Switch",
    "UnknownFeature",
    "build_admission",
    "phrase_check",
]


def build_admission(
    settings: AdmissionSettings,
    db: Database,
    rate_backend: RateLimitBackend | None = None,
    turn_budget_s: float = DEFAULT_TURN_BUDGET_S,
) -> Admission:
    """The instance's admission controller; feature switches go on the timeline of unresolved incidents;
    ``rate_backend``: a shared store of the rate-limit counters (Redis), memory without it;
    ``turn_budget_s``: a turn's budget, which the queue's wait and size follow."""
    timeline = IncidentTimeline(IncidentStore(db))
    admission = Admission(
        settings, FeatureFlags(observers=[timeline]), rate_backend=rate_backend, turn_budget_s=turn_budget_s
    )
    admission.closers.append(timeline.close)
    metrics.ADMISSION_LIMIT.set_function(lambda: admission.gate.limit)
    metrics.ADMISSION_IN_FLIGHT.set_function(lambda: admission.gate.in_flight)
    metrics.ADMISSION_QUEUED.set_function(lambda: len(admission.gate.queue))
    return admission
