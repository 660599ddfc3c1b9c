"""Diagnosis: from symptoms (alerts, health, logged errors, stage latency, breakers, resources) to causes.

The public face, for the API, the CLI, drills and remediation::

    diagnoser = build_diagnoser(settings, incidents, health=rt.health, alerts=rt.alerts)
    diagnoser.diagnose()              # the current symptoms, ranked likely causes with evidence
    diagnoser.diagnose(incident_id)   # the same, with that incident's alerts among the symptoms
    diagnoser.incident_opened(id)     # the IncidentStore hook: writes the diagnosis on the timeline

Rules are declarative (``rules.py``, ``default_diagnosis.yaml``); confidence is explained in
``engine.py``; what is observed, and how, in ``symptoms.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ragvigil.config import DiagnosisSettings, Settings
from ragvigil.ops import metrics
from ragvigil.ops.alerts.incidents import IncidentStore
from ragvigil.ops.diagnosis.diagnoser import TIMELINE_KIND, Diagnoser
from ragvigil.ops.diagnosis.engine import CONFIDENCE_FORMULA, CauseMatch, Evidence, rank
from ragvigil.ops.diagnosis.rules import (
    KNOWN_ACTIONS,
    DiagnosisRuleError,
    DiagnosisRules,
    default_diagnosis_rules,
    load_diagnosis_file,
    load_diagnosis_rules,
)
from ragvigil.ops.diagnosis.symptoms import (
    AlertSymptom,
    SymptomCollector,
    Symptoms,
    SymptomSources,
    engine_alerts,
    host_figures,
)
from ragvigil.ops.health import HealthChecks

__all__ = [
    "CONFIDENCE_FORMULA",
    "KNOWN_ACTIONS",
    "TIMELINE_KIND",
    "AlertSymptom",
    "CauseMatch",
    "Diagnoser",
    "DiagnosisRuleError",
    "DiagnosisRules",
    "Evidence",
    "SymptomCollector",
    "SymptomSources",
    "Symptoms",
    "build_diagnoser",
    "configured_rules",
    "load_diagnosis_file",
    "load_diagnosis_rules",
    "rank",
]


def configured_rules(settings: DiagnosisSettings) -> DiagnosisRules:
    """The rule file named in the settings, else the bundled rules; raises ``DiagnosisRuleError``."""
    return default_diagnosis_rules() if settings.rules_file is None else load_diagnosis_file(settings.rules_file)


def build_diagnoser(
    settings: Settings,
    incidents: IncidentStore | None,
    *,
    health: HealthChecks | None = None,
    alerts: Any = None,
    providers_status: Callable[[], list[dict[str, Any]] | None] | None = None,
    alert_source: Callable[[], list[AlertSymptom]] | None = None,
) -> Diagnoser:
    """One instance's diagnoser; raises ``DiagnosisRuleError`` for an invalid rule file.

    ``alerts``: the ``AlertService`` (None when the embedded engine is off); ``alert_source`` replaces
    it (the CLI reads the firing alerts the running service filed); ``providers_status``: the provider
    router's ``status()``, returning None while there is no router.
    """
    d = settings.diagnosis
    sources = SymptomSources(
        alerts=alert_source or (engine_alerts(alerts) if alerts is not None else None),
        health=(lambda: health.results(wait_optional=False)) if health is not None else None,
        history=(lambda: alerts.history) if alerts is not None else None,
        log_dir=settings.log_dir,
        providers_status=providers_status,
        stage_histogram=metrics.STAGE_DURATION,
        resources=host_figures(settings.data_dir),
    )
    collector = SymptomCollector(sources, d.window_s, d.max_log_bytes)
    return Diagnoser(
        configured_rules(d),
        collector,
        incidents,
        min_confidence=d.min_confidence,
        max_causes=d.max_causes,
        on_open=d.enabled,
    )
