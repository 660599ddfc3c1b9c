"""A session's emotions turn by turn, and whether they are deteriorating (the hand-off's negative trend)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from ragvigil.api.deps import get_principal, get_runtime, require
from ragvigil.api.session_access import require_readable
from ragvigil.app import Runtime
from ragvigil.chat.handoff.signals import negative_streak, polarity_of
from ragvigil.ops.access import Principal, Role

router = APIRouter(prefix="/api/v1", tags=["chat"], dependencies=[Depends(require(Role.client))])


@router.get("/sessions/{session_id}/emotions")
async def session_emotions(
    request: Request,
    session_id: str = Path(..., max_length=64),
    user_id: str | None = Query(None, max_length=128, description="the user_id the session was opened with"),
    limit: int = Query(100, ge=1, le=1000, description="the last this many user turns"),
    rt: Runtime = Depends(get_runtime),
    who: Principal = Depends(get_principal),
) -> dict[str, Any]:
    """Per user turn, oldest first: ``message_id``, ``created_at``, ``emotion`` (None when not analysed);
    ``deteriorating`` when the last ``handoff.negative_turns`` turns were all negative.

    Who may read it is the rule of ``/sessions/{id}/messages``: the owner, or an operator/admin (audited).
    """
    owner = await require_readable(rt, who, request, session_id, user_id, "emotions")
    rows = await run_in_threadpool(rt.history.messages, session_id, owner)
    turns = [m for m in rows if m.role == "user"][-limit:]
    items = [
        {
            "message_id": m.id,
            "created_at": m.created_at.isoformat(),
            "emotion": (m.analysis or {}).get("emotion"),
        }
        for m in turns
    ]
    streak = negative_streak(polarity_of(m.analysis) for m in turns)
    threshold = rt.settings.handoff.negative_turns
    return {
        "session_id": session_id,
        "turns": items,
        "negative_streak": streak,
        "negative_turns": threshold,
        "deteriorating": streak >= threshold,
    }
