"""The hand-off queue: what people must take over (operator role), claim and close (audited).

A record carries no user text by default: an operator triaging the queue sees why and how urgent,
and asks for the triggering message only when about to act on it (``?include=message``; the
read is audited like a support read of a session).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from starlette.concurrency import run_in_threadpool

from ragvigil.api.deps import client_address, get_runtime, require
from ragvigil.api.openapi import ERROR_REF
from ragvigil.api.schemas import text_schema
from ragvigil.app import Runtime
from ragvigil.ops.access import Principal, Role
from ragvigil.storage.models import HandoffRecord
from ragvigil.storage.text import check_storable

router = APIRouter(prefix="/api/v1", tags=["handoffs"])
Operator = Depends(require(Role.operator))
MAX_OFFSET = 1_000_000
CONFLICT = {
    409: {"description": "Conflict with the current state", "content": {"application/json": {"schema": ERROR_REF}}}
}
HandoffId = Annotated[str, Path(max_length=32)]


class CloseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Annotated[
        Annotated[str, AfterValidator(check_storable), Field(max_length=HandoffRecord.NOTE_CHARS)] | None,
        WithJsonSchema({"anyOf": [text_schema(HandoffRecord.NOTE_CHARS), {"type": "null"}]}),
    ] = None


async def _audit(rt: Runtime, who: Principal, request: Request, action: str, handoff_id: str, **detail: Any) -> None:
    await run_in_threadpool(
        rt.audit.record, who, action, "ok", f"handoff:{handoff_id}", client_address(request), detail
    )


@router.get("/handoffs")
async def list_handoffs(
    request: Request,
    rt: Runtime = Depends(get_runtime),
    who: Principal = Operator,
    status: Literal["open", "claimed", "closed"] | None = None,
    priority: int | None = Query(None, ge=1, le=4),
    limit: int = Query(
        50, ge=1, le=1000, description="records on the page (cut to the configured largest page, 200 by default)"
    ),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    include: Literal["message"] | None = Query(None, description="`message`: add the triggering user message"),
) -> dict[str, Any]:
    """The queue, most urgent and oldest first: ``items``, ``total``, ``next_offset`` (None on the last page)."""
    limit = min(limit, rt.settings.handoff.max_page)  # a larger page is cut: next_offset leads on
    store = rt.handoffs.store
    page = await run_in_threadpool(store.list, status, priority, limit, offset, include == "message")
    if include == "message":
        await _audit(rt, who, request, "handoff.read", "*", view="list", items=len(page["items"]))
    return page


@router.get("/handoffs/{handoff_id}")
async def get_handoff(
    request: Request,
    handoff_id: HandoffId,
    rt: Runtime = Depends(get_runtime),
    who: Principal = Operator,
    include: Literal["message"] | None = Query(None, description="`message`: add the triggering user message"),
) -> dict[str, Any]:
    record = await run_in_threadpool(rt.handoffs.store.get, handoff_id, include == "message")
    if include == "message":
        await _audit(rt, who, request, "handoff.read", handoff_id, view="message")
    return record


@router.post("/handoffs/{handoff_id}/claim", responses=CONFLICT)
async def claim_handoff(
    request: Request, handoff_id: HandoffId, rt: Runtime = Depends(get_runtime), who: Principal = Operator
) -> dict[str, Any]:
    """Take the record (409 when it is closed or another operator holds it)."""
    record = await run_in_threadpool(rt.handoffs.store.claim, handoff_id, who.name)
    await _audit(rt, who, request, "handoff.claim", handoff_id, reason=record["reason"])
    return record


@router.post("/handoffs/{handoff_id}/close", responses=CONFLICT)
async def close_handoff(
    request: Request,
    handoff_id: HandoffId,
    body: CloseIn | None = None,
    rt: Runtime = Depends(get_runtime),
    who: Principal = Operator,
) -> dict[str, Any]:
    """Done with it; an optional ``note`` says how (409 when it is closed already)."""
    note = body.note if body else None
    record = await run_in_threadpool(rt.handoffs.store.close, handoff_id, who.name, note)
    await _audit(rt, who, request, "handoff.close", handoff_id, reason=record["reason"], noted=bool(note))
    return record
