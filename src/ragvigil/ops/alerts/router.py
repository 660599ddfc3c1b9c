"""Route firing alerts like Alertmanager: inhibit, silence, group, wait, repeat — and escalate.

Every evaluation cycle the router gets the engine's alerts (firing, and resolved within 15 min):

1. **inhibition**: a firing source alert (by default RagvigilUnhealthy) suppresses the P2/P3 alerts
   with equal ``equal`` labels — they join the source's incident instead of paging anyone;
2. **silences** mute matching alerts (they still fire and are recorded);
3. **incidents**: new firing and resolved episodes are filed (``IncidentStore``);
4. **grouping**: alerts with the same ``group_by`` labels form a group, notified first after
   ``group_wait`` (``p1_group_wait``, 0 s, when the group has a P1), then after ``group_interval``
   when the group changed, and every ``repeat_interval`` while it keeps firing (one notification per
   problem per 5 minutes by default); a group whose alerts all resolved sends one "resolved" and ends;
5. **escalation**: an incident nobody acknowledged is raised (P2 → P1 after 30 min, P3 → P2 after
   2 h) and notified again at its new severity.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ragvigil.config import RoutingSettings
from ragvigil.ops.alerts.channels import Notification
from ragvigil.ops.alerts.engine import Alert
from ragvigil.ops.alerts.incidents import AlertNotice, IncidentStore
from ragvigil.ops.alerts.silences import SilenceStore, matches_all, parse_matcher

log = logging.getLogger(__name__)


@dataclass
class _Group:
    key: str
    labels: dict[str, str]
    created: float
    alerts: dict[str, AlertNotice] = field(default_factory=dict)
    next_flush: float = 0.0
    last_flush: float | None = None
    last_sent: frozenset[tuple[str, str]] = frozenset()

    def content(self) -> frozenset[tuple[str, str]]:
        return frozenset((fp, a.status) for fp, a in self.alerts.items())


def _dt(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


def notice_of(alert: Alert) -> AlertNotice:
    return AlertNotice(
        labels=dict(alert.labels),
        annotations=dict(alert.annotations),
        status="resolved" if alert.state == "resolved" else "firing",
        starts_at=_dt(alert.active_at),  # type: ignore[arg-type]
        ends_at=_dt(alert.resolved_at),
    )


class Router:
    def __init__(
        self,
        settings: RoutingSettings,
        incidents: IncidentStore,
        silences: SilenceStore,
        notify: Callable[[Notification], None],
        external_url: str = "",
    ) -> None:
        self.settings = settings
        self.incidents = incidents
        self.silences = silences
        self.notify = notify
        self.external_url = external_url
        self._inhibit = [
            ([parse_matcher(m) for m in r.source_matchers], [parse_matcher(m) for m in r.target_matchers], r.equal)
            for r in settings.inhibit_rules
        ]
        self._groups: dict[str, _Group] = {}
        self._filed: dict[tuple[str, datetime], str] = {}  # episode -> status already filed
        self._announced: set[tuple[str, datetime]] = set()  # resolved episodes already notified
        self._next_escalation = 0.0
        self.suppressed: dict[str, str] = {}  # fingerprint -> why (silenced by X / inhibited by Y)

    def group_key(self, labels: dict[str, str]) -> tuple[str, dict[str, str]]:
        picked = {k: labels.get(k, "") for k in self.settings.group_by}
        return "{}:{" + ",".join(f'{k}="{v}"' for k, v in picked.items()) + "}", picked

    def process(self, alerts: list[Alert], now: float | None = None) -> list[Notification]:
        """One routing pass; returns the notifications handed to ``notify``."""
        now = time.time() if now is None else now
        notices = [notice_of(a) for a in alerts if a.state in ("firing", "resolved")]
        firing = [n for n in notices if n.status == "firing"]
        suppressed: dict[str, str] = {}
        inhibitors: dict[str, str] = {}  # target fingerprint -> the source that explains it
        for n in firing:
            source = self._inhibited_by(n, firing)
            if source is not None:
                suppressed[n.fingerprint] = f"inhibited by {source.alertname}"
                n.extra["inhibited_by"] = source.alertname
                inhibitors[n.fingerprint] = source.fingerprint
                continue
            silence = self.silences.silenced_by(n.labels, _dt(now))
            if silence is not None:
                suppressed[n.fingerprint] = f"silenced by {silence}"
                n.extra["silenced_by"] = silence
        self.suppressed = suppressed
        self._file(notices, inhibitors, now)
        sent = self._flush_groups([n for n in notices if n.fingerprint not in suppressed], now)
        if now >= self._next_escalation:
            self._next_escalation = now + 30
            sent += self._escalate(now)
        return sent

    def _inhibited_by(self, target: AlertNotice, firing: list[AlertNotice]) -> AlertNotice | None:
        for sources, targets, equal in self._inhibit:
            if not matches_all(targets, target.labels):
                continue
            for src in firing:
                if src.fingerprint == target.fingerprint or not matches_all(sources, src.labels):
                    continue
                if all(src.labels.get(k, "") == target.labels.get(k, "") for k in equal):
                    return src
        return None

    def _file(self, notices: list[AlertNotice], inhibitors: dict[str, str], now: float) -> None:
        """File new episodes and resolutions in incidents (only what changed since the last pass)."""
        fresh = [n for n in notices if self._filed.get((n.fingerprint, n.starts_at)) != n.status]
        fresh.sort(key=lambda n: n.fingerprint in inhibitors)  # sources first: the explained join them
        for n in fresh:
            key, _ = self.group_key(n.labels)
            try:
                source = inhibitors.get(n.fingerprint)
                join = self.incidents.open_incident_of(source) if source else None
                self.incidents.record([n], key, join, _dt(now))
            except Exception as exc:  # the database may be down; try again next pass
                log.warning("incident_record_failed", extra={"error": str(exc)})
                continue
            self._filed[(n.fingerprint, n.starts_at)] = n.status
        live = {(n.fingerprint, n.starts_at) for n in notices}
        for episode in [e for e in self._filed if e not in live]:
            del self._filed[episode]

    def _flush_groups(self, notices: list[AlertNotice], now: float) -> list[Notification]:
        s = self.settings
        self._announced &= {(n.fingerprint, n.starts_at) for n in notices}
        for n in notices:
            if n.status == "resolved" and (n.fingerprint, n.starts_at) in self._announced:
                continue  # the engine keeps resolved alerts 15 min; their resolution goes out once
            key, labels = self.group_key(n.labels)
            group = self._groups.get(key)
            if group is None:
                if n.status != "firing":
                    continue  # a resolution of something never notified
                group = self._groups[key] = _Group(key, labels, now)
                group.next_flush = now + (s.p1_group_wait if n.severity == "P1" else s.group_wait)
            if n.severity == "P1" and group.last_flush is None:
                group.next_flush = min(group.next_flush, group.created + s.p1_group_wait)
            group.alerts[n.fingerprint] = n
        live = {n.fingerprint for n in notices}
        sent = []
        for key, group in list(self._groups.items()):
            for fp in [fp for fp in group.alerts if fp not in live]:
                del group.alerts[fp]  # dropped out of the engine's memory, or now suppressed
            if not group.alerts:
                del self._groups[key]
                continue
            if now < group.next_flush:
                continue
            content = group.content()
            firing = any(a.status == "firing" for a in group.alerts.values())
            changed = content != group.last_sent
            repeat_due = group.last_flush is not None and now - group.last_flush >= s.repeat_interval
            if changed or (firing and repeat_due):
                sent.append(self._send(group, now))
            if not firing:
                del self._groups[key]  # its resolution has been announced
            else:
                for fp in [fp for fp, a in group.alerts.items() if a.status == "resolved"]:
                    del group.alerts[fp]
                group.next_flush = now + s.group_interval
        return sent

    def _send(self, group: _Group, now: float) -> Notification:
        ids = []
        for a in group.alerts.values():
            incident = self.incidents.open_incident_of(a.fingerprint) if a.status == "firing" else None
            if incident and incident not in ids:
                ids.append(incident)
        n = Notification(group.key, group.labels, list(group.alerts.values()), ids, external_url=self.external_url)
        group.last_flush, group.last_sent = now, group.content()
        self._announced |= {(a.fingerprint, a.starts_at) for a in group.alerts.values() if a.status == "resolved"}
        self.notify(n)
        return n

    def _escalate(self, now: float) -> list[Notification]:
        try:
            raised = self.incidents.escalate(_dt(now), self.settings.escalation())  # type: ignore[arg-type]
        except Exception as exc:
            log.warning("escalation_failed", extra={"error": str(exc)})
            return []
        sent = []
        for incident in raised:
            group = self._groups.get(incident["group_key"])
            alerts = list(group.alerts.values()) if group else []
            n = Notification(
                incident["group_key"],
                group.labels if group else {},
                alerts,
                [incident["id"]],
                escalated_to=incident["severity"],
                external_url=self.external_url,
            )
            log.warning("incident_escalated", extra={"incident": incident["id"], "severity": incident["severity"]})
            self.notify(n)
            sent.append(n)
        return sent
