"""Incidents, silences, deliveries, channel tests and Alertmanager's webhook."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool
from starlette.concurrency import run_in_threadpool

from ragvigil.api.deps import client_address, get_runtime, require
from ragvigil.api.errors import ApiError
from ragvigil.app import Runtime
from ragvigil.ops.access import Principal, Role
from ragvigil.ops.alerts.channels import test_notification
from ragvigil.ops.alerts.incidents import AlertNotice, IncidentNotFound
from ragvigil.ops.alerts.rules import parse_duration
from ragvigil.ops.alerts.silences import SilenceWindowError, parse_matcher, silence_window

router = APIRouter(prefix="/api/v1/ops", tags=["ops"])
Viewer = Depends(require(Role.viewer))


# --- incidents -----------------------------------------------------------------------------------
@router.get("/incidents", dependencies=[Viewer])
async def list_incidents(
    rt: Runtime = Depends(get_runtime),
    status: Literal["open", "acknowledged", "resolved"] | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, object]:
    return {"incidents": await run_in_threadpool(rt.incidents.list, status, limit)}


@router.get("/incidents/{incident_id}", dependencies=[Viewer])
async def get_incident(incident_id: str, rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """The incident with its alerts and its timeline (firing, resolved, notified, acknowledged, escalated…)."""
    try:
        return await run_in_threadpool(rt.incidents.get, incident_id)
    except IncidentNotFound:
        raise ApiError(404, "incident_not_found", f"no incident {incident_id}") from None


class AckIn(BaseModel):
    comment: str = Field("", max_length=2000)


@router.post("/incidents/{incident_id}/ack")
async def acknowledge(
    incident_id: str,
    request: Request,
    body: AckIn | None = None,
    rt: Runtime = Depends(get_runtime),
    who: Principal = Depends(require(Role.operator)),
) -> dict[str, Any]:
    """Acknowledge: someone is on it. Stops the escalation of an unhandled incident."""
    try:
        out = await run_in_threadpool(rt.incidents.acknowledge, incident_id, who.name, body.comment if body else "")
    except IncidentNotFound:
        await run_in_threadpool(rt.audit.record, who, "incident.ack", "not_found", incident_id, client_address(request))
        raise ApiError(404, "incident_not_found", f"no incident {incident_id}") from None
    await run_in_threadpool(rt.audit.record, who, "incident.ack", "ok", incident_id, client_address(request))
    return out


# --- silences ------------------------------------------------------------------------------------
def _time_as_text(value: Any) -> Any:
    """Alertmanager sends RFC 3339 text; pydantic alone would read a number such as 0 as 1970-01-01."""
    if not isinstance(value, str | datetime):
        raise ValueError("must be an RFC 3339 date-time string")
    return value


Rfc3339 = Annotated[datetime, BeforeValidator(_time_as_text)]


class MatcherIn(BaseModel):
    """One matcher as an object; ``isRegex``/``isEqual`` is Alertmanager's API form of ``op``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=128)
    op: Literal["=", "!=", "=~", "!~"] = "="
    value: str = Field(..., max_length=1024)
    isRegex: StrictBool | None = None
    isEqual: StrictBool | None = None


MatcherText = Annotated[str, Field(pattern=r'^\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=)\s*"?.*?"?\s*$', max_length=1200)]


class SilenceIn(BaseModel):
    matchers: list[MatcherIn | MatcherText] = Field(
        ..., min_length=1, max_length=50, description='[{"name","op","value"}] or ["severity=\\"P3\\""]'
    )
    starts_at: Rfc3339 | None = None
    ends_at: Rfc3339 | None = None
    duration: str | None = Field(None, description="instead of ends_at, e.g. 2h")
    comment: str = Field(..., min_length=1, max_length=2000)


@router.get("/silences", dependencies=[Viewer])
async def list_silences(rt: Runtime = Depends(get_runtime), include_expired: bool = False) -> dict[str, object]:
    return {"silences": await run_in_threadpool(rt.silences.list, include_expired)}


@router.post("/silences", status_code=201)
async def create_silence(
    body: SilenceIn,
    request: Request,
    rt: Runtime = Depends(get_runtime),
    who: Principal = Depends(require(Role.operator)),
) -> dict[str, Any]:
    try:
        matchers = [parse_matcher(m if isinstance(m, str) else m.model_dump(exclude_unset=True)) for m in body.matchers]
    except ValueError as exc:
        raise ApiError(422, "validation_error", str(exc), "matchers") from None
    try:
        duration = parse_duration(body.duration) if body.ends_at is None and body.duration is not None else None
        starts, ends = silence_window(body.starts_at, body.ends_at, duration)
    except SilenceWindowError as exc:
        raise ApiError(422, "validation_error", str(exc), exc.field) from None
    except ValueError as exc:
        raise ApiError(422, "validation_error", str(exc), "duration") from None
    try:
        out = await run_in_threadpool(rt.silences.create, matchers, starts, ends, who.name, body.comment)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ApiError(422, "validation_error", str(exc), "ends_at") from None
    detail = {"matchers": [str(m) for m in matchers]}
    await run_in_threadpool(rt.audit.record, who, "silence.create", "ok", out["id"], client_address(request), detail)
    return out


@router.delete("/silences/{silence_id}")
async def expire_silence(
    silence_id: str,
    request: Request,
    rt: Runtime = Depends(get_runtime),
    who: Principal = Depends(require(Role.operator)),
) -> dict[str, Any]:
    out = await run_in_threadpool(rt.silences.expire, silence_id)
    await run_in_threadpool(
        rt.audit.record, who, "silence.expire", "ok" if out else "not_found", silence_id, client_address(request)
    )
    if out is None:
        raise ApiError(404, "silence_not_found", f"no silence {silence_id}")
    return out


def _aware(dt: datetime | None) -> datetime | None:
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


# --- deliveries and channels ---------------------------------------------------------------------
@router.get("/alerts/deliveries", dependencies=[Viewer])
async def deliveries(
    rt: Runtime = Depends(get_runtime), channel: str | None = None, limit: int = Query(100, ge=1, le=1000)
) -> dict[str, object]:
    """The delivery log, newest first, and each channel's health."""
    health = {
        name: {"up": h.up, "consecutive_failures": h.consecutive_failures, "last_error": h.last_error}
        for name, h in rt.notifier.health.items()
    }
    return {"channels": health, "deliveries": await run_in_threadpool(rt.notifier.deliveries, limit, channel)}


@router.post("/alerts/channels/{name}/test")
async def test_channel(
    name: str, request: Request, rt: Runtime = Depends(get_runtime), who: Principal = Depends(require(Role.operator))
) -> dict[str, Any]:
    """Send a test notification through one channel now and say what happened."""
    if name not in rt.notifier.channels:
        raise ApiError(404, "channel_not_found", f"no channel {name}; configured: {sorted(rt.notifier.channels)}")
    results = await run_in_threadpool(rt.notifier.deliver, test_notification(), name)
    r = results[0]
    await run_in_threadpool(
        rt.audit.record,
        who,
        "channel.test",
        "ok" if r.ok else "failed",
        name,
        client_address(request),
        {"error": r.error},
    )
    return {"channel": name, "ok": r.ok, "attempts": r.attempts, "error": r.error}


# --- Alertmanager's webhook ----------------------------------------------------------------------
class AMAlert(BaseModel):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    startsAt: Rfc3339
    endsAt: Rfc3339 | None = None
    fingerprint: str | None = None


class AMPayload(BaseModel):
    version: str = "4"
    groupKey: str = Field(..., max_length=2000)
    status: Literal["firing", "resolved"]
    receiver: str = ""
    alerts: list[AMAlert] = Field(..., max_length=5000)


@router.post("/alerts/webhook")
async def alertmanager_webhook(
    body: AMPayload,
    request: Request,
    rt: Runtime = Depends(get_runtime),
    who: Principal = Depends(require(Role.operator)),
) -> dict[str, Any]:
    """Alertmanager delivers here; alerts open or join incidents. Repeated deliveries change nothing."""
    notices = []
    for a in body.alerts:
        starts = _aware(a.startsAt)
        ends = _aware(a.endsAt)
        if ends is not None and starts is not None and ends < starts:
            ends = None  # Alertmanager's zero time for "not ended"
        notices.append(
            AlertNotice(
                labels=a.labels,
                annotations=a.annotations,
                status=a.status,
                starts_at=starts,  # type: ignore[arg-type]
                ends_at=ends,
                source="alertmanager",
                fingerprint=a.fingerprint or "",
            )
        )
    touched = await run_in_threadpool(rt.incidents.record, notices, body.groupKey)
    return {"received": len(notices), "incidents_changed": touched}
