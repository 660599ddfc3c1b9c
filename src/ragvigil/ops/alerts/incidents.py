"""Incidents: firing alerts open or join one; its timeline keeps everything that happened to it.

Both engines feed the same records: the built-in one through the router, Prometheus through
Alertmanager's webhook. An alert is identified the way Alertmanager identifies it, by the
fingerprint of its label set; an alert has at most one open (firing) episode. The start time is
not part of the identity: Alertmanager keeps the earliest ``startsAt`` any sender reported, so
behind a redundant pair of Prometheus servers the same episode comes back with an earlier start,
and its resolution must still close it. A repeated delivery (Alertmanager re-sends a group every
repeat_interval, and retries) updates the open episode instead of adding one, and a delivery from
before an episode ended (a late retry) changes nothing — replayed webhooks never duplicate an
incident nor reopen one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from ragvigil.storage.db import Database
from ragvigil.storage.models import Incident, IncidentAlert, IncidentEvent, utcnow

SEVERITY_RANK = {"P1": 1, "P2": 2, "P3": 3}
log = logging.getLogger(__name__)


def fingerprint(labels: dict[str, str]) -> str:
    """A stable id of a label set (Alertmanager uses a hash of the labels too)."""
    text = "\x1f".join(f"{k}\x1e{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _utc(dt: datetime | None) -> datetime | None:
    """Everything here is UTC: SQLite hands back naive datetimes, a sender may use any offset."""
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


@dataclass
class AlertNotice:
    """An alert as either engine reports it."""

    labels: dict[str, str]
    annotations: dict[str, str]
    status: str  # firing | resolved
    starts_at: datetime
    ends_at: datetime | None = None
    source: str = "embedded"
    fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. inhibited_by, silenced_by

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.labels)
        # one clock for comparisons: SQLite stores wall time, so +08:00 and Z must not both reach it
        self.starts_at = _utc(self.starts_at)  # type: ignore[assignment]
        self.ends_at = _utc(self.ends_at)

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "unnamed")

    @property
    def severity(self) -> str:
        sev = self.labels.get("severity", "P3")
        return sev if sev in SEVERITY_RANK else "P3"


class IncidentNotFound(LookupError):
    pass


class IncidentStore:
    def __init__(self, db: Database, on_opened: Callable[[str], None] | None = None) -> None:
        """``on_opened(incident_id)`` runs after a new incident is committed (e.g. to diagnose it)."""
        self.db = db
        self.on_opened = on_opened

    def record(
        self, notices: list[AlertNotice], group_key: str, join: str | None = None, at: datetime | None = None
    ) -> list[str]:
        """File the notices under an incident; returns the ids of the incidents that changed.

        A firing alert joins ``join`` (the incident of the alert that explains it) or the open
        incident of ``group_key``, else opens one. An incident whose alerts have all resolved resolves.
        """
        touched: list[str] = []
        opened: list[str] = []
        at = at or utcnow()
        with self.db.session(write=True) as s:
            seen = _EpisodesOf(s, {n.fingerprint for n in notices})
            current: Incident | None = None  # the incident this batch's new alerts join
            for n in notices:
                episode = seen.open_episode(n.fingerprint)
                if n.status == "firing":
                    if seen.ended_after(n.fingerprint, n.starts_at):
                        continue  # a late copy of an episode that has since resolved
                    if episode is not None:
                        episode.annotations = n.annotations  # the value in the summary moves on
                        if n.starts_at < _utc(episode.starts_at):  # type: ignore[operator]
                            episode.starts_at = n.starts_at  # another sender saw it first
                        continue
                    incident = current if current is not None and current.status != "resolved" else None
                    if incident is None:  # asked once per batch, and again only after it resolved
                        incident = current = self._open_incident(s, n, group_key, join, at, opened)
                    episode = IncidentAlert(
                        incident_id=incident.id,
                        fingerprint=n.fingerprint,
                        alertname=n.alertname,
                        severity=n.severity,
                        state="firing",
                        labels=n.labels,
                        annotations=n.annotations,
                        starts_at=n.starts_at,
                    )
                    s.add(episode)
                    seen.opened(episode)  # the next notice of this batch finds the episode
                    if SEVERITY_RANK[n.severity] < SEVERITY_RANK.get(incident.severity, 3):
                        incident.severity = n.severity
                    s.add(self._event(incident.id, "alert_firing", n, at))
                    touched.append(incident.id)
                else:
                    if episode is None:
                        continue  # unknown or already resolved: a replay
                    if n.ends_at is not None and n.ends_at < _utc(episode.starts_at):  # type: ignore[operator]
                        continue  # the end of an earlier episode, delivered late
                    episode.state, episode.ends_at = "resolved", n.ends_at or at
                    seen.resolved(episode)
                    s.add(self._event(episode.incident_id, "alert_resolved", n, at))
                    s.flush()
                    touched.append(episode.incident_id)
                    self._resolve_if_done(s, episode.incident_id, at)
        for incident_id in opened:  # committed: the hook may read and write the incident
            self._announce(incident_id)
        return list(dict.fromkeys(touched))

    def _announce(self, incident_id: str) -> None:
        if self.on_opened is None:
            return
        try:
            self.on_opened(incident_id)
        except Exception as exc:  # filing the incident never depends on what is done with it
            log.warning("incident_opened_hook_failed", extra={"incident": incident_id, "error": str(exc)[:300]})

    def _open_incident(
        self, s: Any, n: AlertNotice, group_key: str, join: str | None, at: datetime, opened: list[str]
    ) -> Incident:
        if join is not None:
            joined = s.get(Incident, join)
            if joined is not None and joined.status != "resolved":
                return joined
        incident = s.scalars(
            select(Incident).where(Incident.group_key == group_key, Incident.status != "resolved")
        ).first()
        if incident is None:
            summary = n.annotations.get("summary") or n.alertname
            incident = Incident(
                title=f"{n.alertname}: {summary}"[:512],
                severity=n.severity,
                status="open",
                group_key=group_key,
                source=n.source,
                opened_at=at,
            )
            s.add(incident)
            s.flush()
            s.add(IncidentEvent(incident_id=incident.id, at=at, kind="opened", detail={"group_key": group_key}))
            opened.append(incident.id)
        return incident

    @staticmethod
    def _event(incident_id: str, kind: str, n: AlertNotice, at: datetime) -> IncidentEvent:
        return IncidentEvent(
            incident_id=incident_id,
            at=at,
            kind=kind,
            detail={"alertname": n.alertname, "fingerprint": n.fingerprint, "labels": n.labels, **n.extra},
        )

    def _resolve_if_done(self, s: Any, incident_id: str, at: datetime) -> None:
        still = s.scalars(
            select(IncidentAlert.id).where(IncidentAlert.incident_id == incident_id, IncidentAlert.state == "firing")
        ).first()
        incident = s.get(Incident, incident_id)
        if still is None and incident is not None and incident.status != "resolved":
            incident.status, incident.resolved_at = "resolved", at
            s.add(IncidentEvent(incident_id=incident_id, at=at, kind="resolved", detail={}))

    # --- people ---------------------------------------------------------------------------------
    def acknowledge(self, incident_id: str, actor: str, comment: str = "") -> dict[str, Any]:
        with self.db.session(write=True) as s:
            incident = s.get(Incident, incident_id)
            if incident is None:
                raise IncidentNotFound(incident_id)
            if incident.status == "open":
                incident.status, incident.acknowledged_at, incident.acknowledged_by = "acknowledged", utcnow(), actor
                s.add(
                    IncidentEvent(
                        incident_id=incident_id, kind="acknowledged", actor=actor, detail={"comment": comment}
                    )
                )
            s.flush()
            return _incident_dict(incident)

    def add_event(self, incident_id: str, kind: str, detail: dict[str, Any], actor: str | None = None) -> None:
        with self.db.session(write=True) as s:
            if s.get(Incident, incident_id) is None:
                raise IncidentNotFound(incident_id)
            s.add(IncidentEvent(incident_id=incident_id, kind=kind, actor=actor, detail=detail))

    def escalate(self, now: datetime, after: dict[str, tuple[str, float]]) -> list[dict[str, Any]]:
        """Raise the severity of incidents nobody acknowledged in time (e.g. P2 → P1 after 30 min)."""
        changed = []
        with self.db.session(write=True) as s:
            for incident in s.scalars(select(Incident).where(Incident.status == "open")):
                rule = after.get(incident.severity)
                since = _utc(incident.escalated_at) or _utc(incident.opened_at)
                if rule is None or since is None or (now - since).total_seconds() < rule[1]:
                    continue
                old, incident.severity, incident.escalated_at = incident.severity, rule[0], now
                s.add(
                    IncidentEvent(
                        incident_id=incident.id,
                        at=now,
                        kind="escalated",
                        detail={
                            "from": old,
                            "to": rule[0],
                            "unacknowledged_for_s": round((now - since).total_seconds()),
                        },
                    )
                )
                s.flush()
                changed.append(_incident_dict(incident))
        return changed

    # --- reading --------------------------------------------------------------------------------
    def list(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        with self.db.session() as s:
            q = select(Incident).order_by(Incident.opened_at.desc()).limit(limit)
            if status is not None:
                q = q.where(Incident.status == status)
            return [_incident_dict(i) for i in s.scalars(q)]

    def get(self, incident_id: str) -> dict[str, Any]:
        with self.db.session() as s:
            incident = s.get(Incident, incident_id)
            if incident is None:
                raise IncidentNotFound(incident_id)
            out = _incident_dict(incident)
            alerts = s.scalars(
                select(IncidentAlert).where(IncidentAlert.incident_id == incident_id).order_by(IncidentAlert.id)
            )
            out["alerts"] = [
                {
                    "alertname": a.alertname,
                    "fingerprint": a.fingerprint,
                    "severity": a.severity,
                    "state": a.state,
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "starts_at": _utc(a.starts_at),
                    "ends_at": _utc(a.ends_at),
                }
                for a in alerts
            ]
            events = s.scalars(
                select(IncidentEvent).where(IncidentEvent.incident_id == incident_id).order_by(IncidentEvent.id)
            )
            out["timeline"] = [{"at": _utc(e.at), "kind": e.kind, "actor": e.actor, "detail": e.detail} for e in events]
            return out

    def open_incident_of(self, fp: str) -> str | None:
        """The unresolved incident holding a firing episode of this fingerprint, if any."""
        with self.db.session() as s:
            return s.scalars(
                select(IncidentAlert.incident_id)
                .join(Incident, Incident.id == IncidentAlert.incident_id)
                .where(IncidentAlert.fingerprint == fp, IncidentAlert.state == "firing", Incident.status != "resolved")
            ).first()

    def last_incident_of(self, fp: str) -> str | None:
        """The incident of this fingerprint's latest episode, firing or resolved (where its resolution is told)."""
        with self.db.session() as s:
            return s.scalars(
                select(IncidentAlert.incident_id)
                .where(IncidentAlert.fingerprint == fp)
                .order_by(IncidentAlert.starts_at.desc(), IncidentAlert.id.desc())
            ).first()


def _incident_dict(i: Incident) -> dict[str, Any]:
    return {
        "id": i.id,
        "title": i.title,
        "severity": i.severity,
        "status": i.status,
        "source": i.source,
        "group_key": i.group_key,
        "opened_at": _utc(i.opened_at),
        "acknowledged_at": _utc(i.acknowledged_at),
        "acknowledged_by": i.acknowledged_by,
        "resolved_at": _utc(i.resolved_at),
        "escalated_at": _utc(i.escalated_at),
    }


class _EpisodesOf:
    """The episodes of one batch's fingerprints, read in a few queries and kept current in memory.

    Why: ``record`` asked the database twice per notice (its open episode; whether a later
    episode had resolved) and flushed after each, so one delivery of 5,000 alerts took ~10 s on
    SQLite. The firing episodes and the resolved ones' times are read once per batch here (the
    fingerprints in chunks, under SQLite's bound on parameters), and the batch's own changes are
    applied to the view as they are made.
    """

    CHUNK = 500

    def __init__(self, s: Any, fingerprints: set[str]) -> None:
        self._firing: dict[str, IncidentAlert] = {}
        self._resolved: dict[str, list[tuple[datetime | None, datetime | None]]] = {}
        fps = sorted(fingerprints)
        for i in range(0, len(fps), self.CHUNK):
            chunk = fps[i : i + self.CHUNK]
            rows = s.scalars(
                select(IncidentAlert)
                .where(IncidentAlert.fingerprint.in_(chunk), IncidentAlert.state == "firing")
                .order_by(IncidentAlert.id)
            )
            for row in rows:
                self._firing.setdefault(row.fingerprint, row)  # the first one, as before
            for fp, starts_at, ends_at in s.execute(
                select(IncidentAlert.fingerprint, IncidentAlert.starts_at, IncidentAlert.ends_at).where(
                    IncidentAlert.fingerprint.in_(chunk), IncidentAlert.state == "resolved"
                )
            ):
                self._resolved.setdefault(fp, []).append((_utc(starts_at), _utc(ends_at)))

    def open_episode(self, fp: str) -> IncidentAlert | None:
        """The firing episode of this alert, whatever start time it was reported with."""
        return self._firing.get(fp)

    def ended_after(self, fp: str, starts_at: datetime) -> bool:
        """Whether an episode of this alert resolved at or after ``starts_at`` (so this start is not new)."""
        return any(
            (ended is not None and ended >= starts_at) or started == starts_at
            for started, ended in self._resolved.get(fp, ())
        )

    def opened(self, episode: IncidentAlert) -> None:
        self._firing.setdefault(episode.fingerprint, episode)

    def resolved(self, episode: IncidentAlert) -> None:
        if self._firing.get(episode.fingerprint) is episode:
            del self._firing[episode.fingerprint]
        self._resolved.setdefault(episode.fingerprint, []).append((_utc(episode.starts_at), _utc(episode.ends_at)))
