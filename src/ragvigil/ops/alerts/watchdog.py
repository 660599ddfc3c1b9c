"""The watchdog's own alert: ``AlertEvaluationStalled``, filed and notified around the stalled loop.

Why apart from the evaluator: when evaluation stops, nothing it would raise gets raised, this alert
included. ``AlertService`` notices the stall on its watchdog thread and calls a ``StallAlert``, which
records the incident and hands the notification straight to the notifier.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ragvigil.ops.alerts.channels import Notification
from ragvigil.ops.alerts.incidents import AlertNotice, IncidentStore
from ragvigil.ops.alerts.notifier import Notifier

ALERTNAME = "AlertEvaluationStalled"
_GROUP = '{}:{alertname="AlertEvaluationStalled"}'


class StallAlert:
    """``AlertService(on_stall=...)``: ``(stalled, since)`` fires (True) or resolves (False) the alert."""

    def __init__(self, incidents: IncidentStore, notifier: Notifier) -> None:
        self.incidents = incidents
        self.notifier = notifier

    def __call__(self, stalled: bool, since: float) -> None:
        labels = {"alertname": ALERTNAME, "severity": "P1"}
        notice = AlertNotice(
            labels,
            {"summary": "ragvigil's alert evaluation has stalled: alerts are not being raised"},
            "firing" if stalled else "resolved",
            datetime.fromtimestamp(since, UTC),
            None if stalled else datetime.now(UTC),
        )
        ids = self.incidents.record([notice], _GROUP)
        self.notifier.submit(Notification(_GROUP, labels, [notice], ids))
