"""Chat: one answer, a server-sent-event stream of one answer, and a session's messages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ragvigil.api.deps import get_principal, get_request_id, get_runtime, require
from ragvigil.api.errors import ApiError
from ragvigil.api.schemas import ChatRequest, ChatResponse, MessageOut
from ragvigil.api.session_access import caller_owner, require_kb, require_own_session, require_readable
from ragvigil.app import Runtime
from ragvigil.chat.pipeline import Turn
from ragvigil.errors import RagvigilError
from ragvigil.ops.access import Principal, Role
from ragvigil.ops.logging import session_id_var, user_id_var

router = APIRouter(prefix="/api/v1", tags=["chat"], dependencies=[Depends(require(Role.client))])


async def make_turn(rt: Runtime, body: ChatRequest, request_id: str | None, who: Principal) -> Turn:
    """The turn of a valid request for a knowledge base that exists, owned by the caller."""
    if len(body.message) > rt.settings.max_message_chars:
        raise ApiError(
            422,
            "validation_error",
            f"message is longer than {rt.settings.max_message_chars} characters",
            "message",
        )
    turn = Turn(
        message=body.message.strip(),
        kb=body.kb or rt.settings.default_kb,
        session_id=body.session_id,
        user_id=body.user_id,
        request_id=request_id,
        owner=caller_owner(who),
    )
    await require_kb(rt, turn.kb)
    turn.open_session()
    session_id_var.set(turn.session_id)
    user_id_var.set(body.user_id)
    return turn


def turn_response(turn: Turn) -> ChatResponse:
    return ChatResponse(
        session_id=turn.session_id or "",
        message_id=turn.message_id,
        answer=turn.answer,
        sources=turn.sources,  # type: ignore[arg-type]
        degraded=turn.degraded,
        degraded_reasons=turn.degraded_reasons,
        provider=turn.generation.provider if turn.generation else None,
        latency_ms=round(turn.latency_ms, 2),
        **understood(turn),  # type: ignore[arg-type]
    )


def understood(turn: Turn) -> dict[str, object]:
    """What the turn's responses (REST, SSE, OpenAI's extension fields) say was understood and done."""
    return {
        "analysis": turn.analysis.to_dict() if turn.analysis is not None else None,
        "handoff": turn.handoff.to_dict() if turn.handoff is not None else None,
        "replaced": turn.replaced,
    }


@router.post("/chat", response_model=ChatResponse)
async def chat(
    body: ChatRequest,
    rt: Runtime = Depends(get_runtime),
    request_id: str | None = Depends(get_request_id),
    who: Principal = Depends(get_principal),
) -> ChatResponse:
    """Answer one question; continuing a session that is not the caller's is a 404 (see ``session_access``)."""
    turn = await make_turn(rt, body, request_id, who)
    await run_in_threadpool(rt.pipeline.run, turn)
    return turn_response(turn)


def _sse(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"


@router.post("/chat/stream", response_class=StreamingResponse)
async def chat_stream(
    body: ChatRequest,
    rt: Runtime = Depends(get_runtime),
    request_id: str | None = Depends(get_request_id),
    who: Principal = Depends(get_principal),
) -> StreamingResponse:
    """Events: ``meta`` (session and message ids, the message's ``analysis``), ``delta`` (text), ``done`` (the
    full response, with ``analysis``, ``handoff`` and ``replaced``) or ``error``.

    The turn runs detached from the response: a client that hangs up mid-answer still finds the whole
    turn in its session afterwards.
    """
    turn = await make_turn(rt, body, request_id, who)
    # checked before the response starts, so an unknown (or someone else's) session is a plain 404
    await require_own_session(rt, turn)
    stream = rt.pipeline.start_stream(turn)

    async def events() -> AsyncIterator[str]:
        async for kind, data in stream.events():
            if kind == "meta":
                meta = {"session_id": data.session_id, "message_id": data.message_id, **understood(data)}
                yield _sse("meta", {k: v for k, v in meta.items() if k != "replaced"})
            elif kind == "delta":
                yield _sse("delta", {"text": data})
            elif kind == "done":
                yield _sse("done", turn_response(turn).model_dump())
            else:  # the status line is already sent: report in-band
                yield _sse("error", _stream_error(data))

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _stream_error(exc: Exception) -> dict[str, str]:
    if isinstance(exc, RagvigilError):  # what its status line would have said, had it not been sent yet
        return {"code": exc.code, "message": exc.public_message()}
    return {"code": "stream_failed", "message": f"{type(exc).__name__}: {exc}"[:300]}


@router.get("/sessions/{session_id}/messages", response_model=list[MessageOut])
async def session_messages(
    request: Request,
    session_id: str = Path(..., max_length=64),
    user_id: str | None = Query(None, max_length=128, description="the user_id the session was opened with"),
    rt: Runtime = Depends(get_runtime),
    who: Principal = Depends(get_principal),
) -> list[MessageOut]:
    """The session's messages, for its owner (caller and ``user_id``) or an operator/admin (audited).

    Turns kept in the journal (database down, or not yet replayed) are merged in: no gap, no duplicate.
    """
    owner = await require_readable(rt, who, request, session_id, user_id, "messages")
    rows = await run_in_threadpool(rt.history.messages, session_id, owner)
    return [MessageOut.model_validate(r, from_attributes=True) for r in rows]
