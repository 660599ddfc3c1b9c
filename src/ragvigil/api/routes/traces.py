"""Traces of recent requests and the per-session timeline built from them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from ragvigil.api.deps import client_address, get_principal, get_runtime, require
from ragvigil.api.errors import ApiError
from ragvigil.api.middleware import trace_owner
from ragvigil.api.session_access import require_readable
from ragvigil.app import Runtime
from ragvigil.ops import tracing
from ragvigil.ops.access import Principal, Role

# a caller may read its own traces and timelines (client); reading anyone else's needs operator, audited
router = APIRouter(prefix="/api/v1", tags=["ops"], dependencies=[Depends(require(Role.client))])


def _stage_timings(spans: list[dict] | None) -> dict[str, float] | None:
    if spans is None:
        return None
    return {s["name"].removeprefix("stage."): s["duration_ms"] for s in spans if s["name"].startswith("stage.")}


@router.get("/traces/{request_id}")
async def get_trace(
    request: Request,
    request_id: Annotated[str, PathParam(max_length=64)],
    who: Principal = Depends(require(Role.client)),
    rt: Runtime = Depends(get_runtime),
) -> dict[str, object]:
    """A recent request's spans, for the caller who made it; operators and admins may read any (audited).

    Anyone else gets the same 404 as for an unknown id, so a trace's existence is not revealed.
    """
    trace = tracing.RECENT.get(request_id)
    own = trace is not None and trace.owner is not None and trace.owner == trace_owner(who)
    if trace is None or not (own or who.role >= Role.operator):
        raise ApiError(404, "trace_not_found", f"no trace kept for request {request_id} (unknown or evicted)")
    if not own:  # reading someone else's request for support: on the record
        await run_in_threadpool(
            rt.audit.record,
            who,
            "trace.read",
            "ok",
            target=request_id,
            source=client_address(request),
            detail={"owner": trace.owner},
        )
    return {
        "request_id": request_id,
        "trace_id": f"{trace.trace_id:032x}",
        "client_request_id": trace.client_request_id,
        "spans": trace.as_dicts(),
    }


@router.get("/sessions/{session_id}/timeline")
async def session_timeline(
    request: Request,
    session_id: str = PathParam(..., max_length=64),
    user_id: str | None = Query(None, max_length=128, description="the user_id the session was opened with"),
    rt: Runtime = Depends(get_runtime),
    who: Principal = Depends(get_principal),
) -> dict[str, object]:
    """Each turn of the session with its stage timings (null when its trace is no longer kept).

    Only for the session's owner, or an operator/admin (audited); anyone else gets the unknown-session 404.
    """
    await require_readable(rt, who, request, session_id, user_id, "timeline")
    messages = await run_in_threadpool(rt.sessions.messages, session_id)
    turns = []
    for user, answer in zip(messages[::2], messages[1::2], strict=False):
        turns.append(
            {
                "request_id": answer.request_id,
                "at": user.created_at,
                "question": user.content,
                "answer_message_id": answer.id,
                "latency_ms": answer.latency_ms,
                "degraded": answer.degraded,
                "sources": len(answer.sources or []),
                "stages_ms": _stage_timings(tracing.RECENT.for_request(answer.request_id or "")),
            }
        )
    return {"session_id": session_id, "turns": turns}
