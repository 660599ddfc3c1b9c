"""Builds the alerting subsystem of one instance: incidents, silences, channels, routing, evaluation.

Why a builder here: the pieces are wired in a ring (the router files incidents and hands
notifications to the notifier; the watchdog files its own alert through both) that only this
package needs to know about.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ragvigil.config import Settings, reveal
from ragvigil.ops import metrics
from ragvigil.ops.alerts.channels import build_channel
from ragvigil.ops.alerts.engine import Transition
from ragvigil.ops.alerts.incidents import IncidentStore
from ragvigil.ops.alerts.notifier import Notifier
from ragvigil.ops.alerts.recording import SignalRecorder
from ragvigil.ops.alerts.router import Router
from ragvigil.ops.alerts.service import AlertService
from ragvigil.ops.alerts.silences import SilenceStore
from ragvigil.ops.alerts.watchdog import StallAlert
from ragvigil.ops.health import HealthChecks
from ragvigil.storage.db import Database


@dataclass
class Alerting:
    incidents: IncidentStore
    silences: SilenceStore
    notifier: Notifier
    stall_alert: StallAlert
    service: AlertService | None  # None when alerts are off


def build_alerting(
    settings: Settings,
    db: Database,
    health: HealthChecks,
    on_incident_opened: Callable[[str], None] | None = None,
    on_evaluated: Callable[[list[Transition], float], None] | None = None,
) -> Alerting:
    """The alerting parts; adds the ``notifications`` health check when channels are configured.

    ``on_incident_opened(incident_id)`` runs once a new incident is committed (diagnosis hooks in here);
    ``on_evaluated(transitions, t)`` after every evaluation cycle (remediation acts and verifies there).
    """
    a = settings.alerts
    incidents = IncidentStore(db, on_opened=on_incident_opened)
    silences = SilenceStore(db)
    notifier = Notifier([build_channel(c) for c in a.channels], db, incidents)
    if a.channels:
        health.add("notifications", notifier.check, critical=False)  # node "alerting": never readiness
    stall_alert = StallAlert(incidents, notifier)
    router = Router(a.routing, incidents, silences, notifier.submit, a.external_url)
    service = (
        AlertService(
            metrics.REGISTRY,
            a.rules_file,
            eval_interval=a.eval_interval,
            history_s=a.history_s,
            stall_after=a.stall_after,
            heartbeat_url=reveal(a.heartbeat_url),
            heartbeat_interval=a.heartbeat_interval,
            router=router,
            recorder=SignalRecorder(settings.signal_dir, a.record_retention_h * 3600),
            record_interval=a.record_interval,
            on_stall=stall_alert,
            on_evaluated=on_evaluated,
        )
        if a.enabled
        else None
    )
    return Alerting(incidents, silences, notifier, stall_alert, service)
