"""Diagnosis: ranked likely causes of the current symptoms, or of one incident."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path
from starlette.concurrency import run_in_threadpool

from ragvigil.api.deps import get_runtime, require
from ragvigil.api.errors import ApiError
from ragvigil.app import Runtime
from ragvigil.ops.access import Role
from ragvigil.ops.alerts.incidents import IncidentNotFound

router = APIRouter(prefix="/api/v1/ops", tags=["ops"])
Viewer = Depends(require(Role.viewer))
# a snapshot reads the log tail and runs the health checks: callers within 2 s share one, so polling is cheap
REUSE_S = 2.0


@router.get("/diagnosis", dependencies=[Viewer])
async def diagnose_now(rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """Likely causes of what the instance shows now, each with confidence, evidence and runbook steps."""
    return await run_in_threadpool(lambda: rt.diagnosis.diagnose(reuse_s=REUSE_S))


@router.get("/incidents/{incident_id}/diagnosis", dependencies=[Viewer])
async def diagnose_incident(
    incident_id: str = Path(..., max_length=128), rt: Runtime = Depends(get_runtime)
) -> dict[str, Any]:
    """The incident diagnosed now (its alerts among the symptoms), and the diagnosis written when it opened."""

    def work() -> dict[str, Any]:
        now = rt.diagnosis.diagnose(incident_id, reuse_s=REUSE_S)
        now["at_open"] = rt.diagnosis.recorded(rt.incidents.get(incident_id))
        return now

    try:
        return await run_in_threadpool(work)
    except IncidentNotFound:
        raise ApiError(404, "incident_not_found", f"no incident {incident_id}") from None
