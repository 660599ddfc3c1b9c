"""Traces of recent requests and the per-session timeline built from them."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from ragvigil.api.deps import get_principal, get_runtime, require
from ragvigil.api.errors import ApiError
from ragvigil.api.session_access import require_readable
from ragvigil.app import Runtime
from ragvigil.ops import tracing
from ragvigil.ops.access import Principal, Role

router = APIRouter(prefix="/api/v1", tags=["ops"], dependencies=[Depends(require(Role.viewer))])


def _stage_timings(spans: list[dict] | None) -> dict[str, float] | None:
    if spans is None:
        return None
    return {s["name"].removeprefix("stage."): s["duration_ms"] for s in spans if s["name"].startswith("stage.")}


@router.get("/traces/{request_id}")
async def get_trace(request_id: str) -> dict[str, object]:
    spans = tracing.RECENT.for_request(request_id)
    if spans is None:
        raise ApiError(404, "trace_not_found", f"no trace kept for request {request_id} (unknown or evicted)")
    return {"request_id": request_id, "spans": spans}


@router.get("/sessions/{session_id}/timeline")
async def session_timeline(
    request: Request,
    session_id: str = Path(..., max_length=64),
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
