"""Safe mode: see it (viewer), switch it on or off (operator, audited)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, WithJsonSchema
from starlette.concurrency import run_in_threadpool

from ragvigil.api.deps import client_address, get_runtime, require
from ragvigil.api.schemas import not_blank, text_schema
from ragvigil.app import Runtime
from ragvigil.ops.access import Principal, Role
from ragvigil.storage.text import check_storable

router = APIRouter(prefix="/api/v1/ops", tags=["ops"])


REASON_CHARS = 500
REASON_HELP = "why: shown in the status and the audit trail"


class SafeModeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    active: StrictBool
    reason: Annotated[
        str,
        AfterValidator(check_storable),  # text every database can store
        AfterValidator(not_blank),  # something to read
        Field(max_length=REASON_CHARS),
        WithJsonSchema({**text_schema(REASON_CHARS, not_blank=True), "description": REASON_HELP}),
    ]


@router.get("/safe-mode", dependencies=[Depends(require(Role.viewer))])
async def safe_mode_status(rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """``active``, ``reason``, ``by``, ``since`` and whether the state is saved for a restart."""
    return rt.safe_mode.status()


@router.put("/safe-mode")
async def set_safe_mode(
    body: SafeModeIn,
    request: Request,
    rt: Runtime = Depends(get_runtime),
    who: Principal = Depends(require(Role.operator)),
) -> dict[str, Any]:
    """While on, every chat message is answered with the configured safe response (still stored)."""
    reason = body.reason.strip()
    before = rt.safe_mode.active
    # writing the state file fsyncs: off the event loop
    if body.active:
        state = await run_in_threadpool(rt.safe_mode.enter, reason, who.name)
    else:
        state = await run_in_threadpool(rt.safe_mode.leave, who.name)  # the reason goes to the audit trail
    action = "safe_mode.enter" if body.active else "safe_mode.leave"
    detail = {"reason": reason, "before": before, "changed": state["changed"], "persisted": state["persisted"]}
    await run_in_threadpool(rt.audit.record, who, action, "ok", None, client_address(request), detail)
    return rt.safe_mode.status()
