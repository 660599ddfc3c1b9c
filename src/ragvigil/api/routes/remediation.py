"""Remediation: the policies, the recent runs with their verification, and running an action by hand."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ragvigil.api.deps import client_address, get_runtime, require
from ragvigil.api.errors import ApiError, error_body
from ragvigil.app import Runtime
from ragvigil.ops.access import Principal, Role
from ragvigil.ops.alerts.incidents import IncidentNotFound
from ragvigil.ops.remediation import ActionParamsError, NothingChanged, UnknownAction

router = APIRouter(prefix="/api/v1/ops", tags=["ops"])


@router.get("/remediation", dependencies=[Depends(require(Role.viewer))])
async def remediation_status(rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """Policies (with whether their action exists here), registered actions, and recent runs, newest first."""
    return rt.remediation.status()


class ActionIn(BaseModel):
    params: dict[str, str | int | float | bool | None] = Field(default_factory=dict, max_length=16)
    incident_id: str | None = Field(None, max_length=64, description="write the run on this incident's timeline")
    rollback: bool = Field(False, description="run the action's way back instead (e.g. breaker.open: back to auto)")


_CHANGED_NOTHING = {
    409: {
        "description": "The action found nothing to change (`nothing_changed`)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
}


@router.post("/actions/{name}", responses=_CHANGED_NOTHING)
async def run_action(
    body: ActionIn,
    request: Request,
    name: str = Path(..., max_length=64, pattern=r"^[a-z_]+\.[a-z_]+$"),
    rt: Runtime = Depends(get_runtime),
    who: Principal = Depends(require(Role.operator)),
) -> Any:
    """Run a registered action now; the answer says what it changed. Audited and put on the timeline."""
    if name not in rt.actions:
        await run_in_threadpool(rt.audit.record, who, f"remediation.{name}", "not_found", name, client_address(request))
        raise ApiError(404, "action_not_found", f"no action {name}; known: {', '.join(rt.actions.names())}")
    if body.incident_id is not None:
        try:
            await run_in_threadpool(rt.incidents.get, body.incident_id)
        except IncidentNotFound:
            raise ApiError(404, "incident_not_found", f"no incident {body.incident_id}") from None
    try:
        run = await run_in_threadpool(
            rt.remediation.run_manual, name, body.params, who, body.incident_id, body.rollback, client_address(request)
        )
    except UnknownAction:
        raise ApiError(404, "action_not_found", f"no action {name}") from None
    except ActionParamsError as exc:
        raise ApiError(422, "validation_error", str(exc), "params") from None
    except NothingChanged as exc:
        raise ApiError(409, "nothing_changed", str(exc)) from None
    except Exception as exc:  # the action ran and the system would not change: try again later
        return JSONResponse(
            error_body("action_failed", f"{name} failed: {type(exc).__name__}: {exc}"[:500]),
            status_code=503,
            headers={"Retry-After": "30"},
        )
    return run.as_dict()
