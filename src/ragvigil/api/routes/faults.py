"""Fault injection for drills: admin only, and refused (409 ``faults_disabled``) unless ``faults.enabled``."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ragvigil.api.deps import client_address, get_runtime, require
from ragvigil.api.errors import ApiError
from ragvigil.app import Runtime
from ragvigil.ops.access import Principal, Role
from ragvigil.ops.faults import FaultInvalid, FaultNotFound, FaultsDisabled, TooManyFaults

Admin = require(Role.admin)  # one callable, so FastAPI resolves it once per request


async def faults_enabled(request: Request, rt: Runtime = Depends(get_runtime), who: Principal = Depends(Admin)) -> None:
    """After the role check: a viewer hears 403, an admin of an instance without fault injection 409."""
    if not rt.faults.enabled:
        route = request.scope.get("route")
        action = f"{request.method} {route.path if route else request.url.path}"
        await run_in_threadpool(rt.audit.record, who, action, "faults_disabled", None, client_address(request))
        raise ApiError(409, "faults_disabled", "fault injection is disabled on this instance (faults.enabled)")


router = APIRouter(prefix="/api/v1/ops", tags=["ops"], dependencies=[Depends(Admin), Depends(faults_enabled)])
# every route here may answer 409 (off, or too many faults): published in the OpenAPI document
OPENAPI_STATUSES = {"/api/v1/ops/faults": ["409"], "/api/v1/ops/faults/{fault_id}": ["409"]}


class FaultParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    delay_s: float | None = Field(None, gt=0, le=600, description="seconds a slow/timeout/latency fault waits")
    rate: float | None = Field(None, gt=0, le=1, description="share of calls hit (default 1: every call)")
    threads: int | None = Field(None, ge=1, le=4, description="cpu: busy threads")


class FaultIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str = Field(
        ...,
        max_length=80,
        pattern=r"^(provider:[A-Za-z0-9_.-]{1,64}|vector_store|embedding|database|latency|cpu|redis|safety)$",
        description="provider:<name>, vector_store, embedding, database, latency, cpu, redis or safety",
    )
    kind: Literal["error", "timeout", "slow", "malformed", "refuse", "off"]
    duration_s: float = Field(..., ge=1, le=600, description="the fault ends by itself after this many seconds")
    params: FaultParams = FaultParams()


@router.post("/faults", status_code=201)
async def inject_fault(
    body: FaultIn, request: Request, rt: Runtime = Depends(get_runtime), who: Principal = Depends(Admin)
) -> dict[str, Any]:
    """Start a fault; it acts at once and expires after ``duration_s``. Audited as ``fault.inject``."""
    params = body.params.model_dump(exclude_none=True)
    try:
        fault = rt.faults.inject(body.target, body.kind, body.duration_s, params, by=who.name)
    except FaultInvalid as exc:
        raise ApiError(422, "validation_error", str(exc), exc.field) from None
    except TooManyFaults as exc:
        raise ApiError(409, "too_many_faults", str(exc)) from None
    except FaultsDisabled as exc:  # checked by the dependency already; kept for a switch at run time
        raise ApiError(409, "faults_disabled", str(exc)) from None
    out = fault.to_dict()
    await run_in_threadpool(rt.audit.record, who, "fault.inject", "ok", fault.target, client_address(request), out)
    return out


@router.get("/faults")
async def list_faults(rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """The faults active now, with the seconds each has left."""
    return {"faults": [f.to_dict() for f in rt.faults.list()]}


@router.delete("/faults/{fault_id}")
async def clear_fault(
    request: Request,
    fault_id: str = Path(..., max_length=64),
    rt: Runtime = Depends(get_runtime),
    who: Principal = Depends(Admin),
) -> dict[str, Any]:
    """End one fault now. Audited as ``fault.clear``."""
    try:
        fault = rt.faults.clear(fault_id)
    except FaultNotFound:
        raise ApiError(404, "fault_not_found", f"no active fault {fault_id}") from None
    out = fault.to_dict()
    await run_in_threadpool(rt.audit.record, who, "fault.clear", "ok", fault.target, client_address(request), out)
    return out


@router.delete("/faults")
async def clear_all_faults(
    request: Request, rt: Runtime = Depends(get_runtime), who: Principal = Depends(Admin)
) -> dict[str, Any]:
    """End every fault now (a drill's rollback). Audited as one ``fault.clear`` naming them."""
    cleared = [f.to_dict() for f in rt.faults.clear_all()]
    detail = {"ids": [f["id"] for f in cleared]}
    await run_in_threadpool(rt.audit.record, who, "fault.clear", "ok", "all", client_address(request), detail)
    return {"cleared": cleared}
