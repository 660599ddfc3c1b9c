"""A diagnosis on demand, and one written on an incident's timeline when it opens.

``Diagnoser`` joins the rule set, the symptom collector and the incident store. Diagnosing an
incident adds the incident's own firing alerts to the snapshot (an incident filed from
Alertmanager has alerts the embedded engine never saw). ``incident_opened`` is the callback the
incident store calls after it has committed a new incident; it never raises, because filing the
incident must not depend on diagnosing it.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from typing import Any

from ragvigil.ops.alerts.incidents import IncidentStore
from ragvigil.ops.diagnosis.engine import CONFIDENCE_FORMULA, rank
from ragvigil.ops.diagnosis.rules import DiagnosisRules
from ragvigil.ops.diagnosis.symptoms import SymptomCollector, Symptoms, incident_alerts, iso

log = logging.getLogger(__name__)

TIMELINE_KIND = "diagnosis"
REUSE_ON_OPEN_S = 5.0  # incidents opened within this of each other share one snapshot


class Diagnoser:
    def __init__(
        self,
        rules: DiagnosisRules,
        collector: SymptomCollector,
        incidents: IncidentStore | None = None,
        *,
        min_confidence: float = 0.2,
        max_causes: int = 5,
        on_open: bool = True,
    ) -> None:
        self.rules = rules
        self.collector = collector
        self.incidents = incidents
        self.min_confidence = min_confidence
        self.max_causes = max_causes
        self.on_open = on_open  # diagnose each incident when it opens
        self._lock = threading.Lock()  # one snapshot at a time: log reading is the costly part
        self._last: Symptoms | None = None

    def diagnose(
        self, incident_id: str | None = None, now: float | None = None, reuse_s: float = 0.0
    ) -> dict[str, Any]:
        """Ranked likely causes of the current symptoms (plus the incident's alerts, when one is named).

        ``reuse_s``: a snapshot taken that recently serves again (a burst of incidents opening in one
        evaluation pass reads the logs once). Raises ``IncidentNotFound`` for an unknown incident.
        """
        incident = None
        if incident_id is not None:
            if self.incidents is None:
                raise LookupError("no incident store")
            incident = self.incidents.get(incident_id)
        now = time.time() if now is None else now
        with self._lock:
            last = self._last
            if last is None or not (0 <= now - last.taken_at <= reuse_s):
                last = self._last = self.collector.snapshot(now)
            symptoms = copy.deepcopy(last)  # the incident's alerts are added to a copy
        if incident is not None:
            symptoms.with_alerts(incident_alerts(incident))
        causes = rank(self.rules, symptoms, self.min_confidence)[: self.max_causes]
        return {
            "incident_id": incident_id,
            "taken_at": iso(symptoms.taken_at),
            "causes": [c.to_dict() for c in causes],
            "likely_cause": causes[0].cause.name if causes else None,
            "confidence_formula": CONFIDENCE_FORMULA,
            "rules_source": self.rules.source,
            "symptoms": symptoms.to_dict(),
        }

    def recorded(self, incident: dict[str, Any]) -> dict[str, Any] | None:
        """The diagnosis written on this incident's timeline when it opened, if any."""
        for event in incident.get("timeline", []):
            if event.get("kind") == TIMELINE_KIND:
                return {"at": event["at"], **event["detail"]}
        return None

    def incident_opened(self, incident_id: str) -> None:
        """Diagnose a just-opened incident and write the result on its timeline (never raises)."""
        if self.incidents is None or not self.on_open:
            return
        try:
            result = self.diagnose(incident_id, reuse_s=REUSE_ON_OPEN_S)
            detail = {k: v for k, v in result.items() if k != "incident_id"}
            self.incidents.add_event(incident_id, TIMELINE_KIND, detail, actor="ragvigil")
            log.info(
                "incident_diagnosed",
                extra={
                    "incident": incident_id,
                    "likely_cause": result["likely_cause"],
                    "causes": len(result["causes"]),
                },
            )
        except Exception as exc:  # e.g. the database that holds the timeline is the thing that is down
            log.warning("incident_diagnosis_failed", extra={"incident": incident_id, "error": str(exc)[:300]})
