"""OpenAI-compatible ``/v1/chat/completions`` so existing clients can talk to ragvigil.

The last user message is the question; earlier user/assistant messages are the history.
The client's ``user`` field, or an ``X-Session-ID`` header, keeps no server state here:
each call is answered from the messages it carries, and persisted as a new session.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ragvigil import __version__
from ragvigil.api.deps import get_principal, get_request_id, get_runtime, require
from ragvigil.api.errors import ApiError
from ragvigil.api.schemas import OpenAIChatRequest
from ragvigil.api.session_access import caller_owner, require_kb
from ragvigil.app import Runtime
from ragvigil.chat.pipeline import Turn
from ragvigil.ops.access import Principal, Role

router = APIRouter(prefix="/v1", tags=["openai-compatible"], dependencies=[Depends(require(Role.client))])
MODEL = "ragvigil"


def _turn(rt: Runtime, body: OpenAIChatRequest, request_id: str | None) -> Turn:
    users = [i for i, m in enumerate(body.messages) if m.role == "user"]
    if not users or not body.messages[users[-1]].text().strip():
        raise ApiError(422, "validation_error", "messages must contain a non-empty user message", "messages")
    last = users[-1]
    question = body.messages[last].text().strip()
    if len(question) > rt.settings.max_message_chars:
        raise ApiError(422, "validation_error", "the user message is too long", "messages")
    turn = Turn(message=question, kb=rt.settings.default_kb, user_id=body.user, request_id=request_id)
    history = [(m.role, m.text()) for m in body.messages[:last] if m.role in ("user", "assistant")]
    turn.history = history[-2 * rt.settings.retrieval.history_turns :] if rt.settings.retrieval.history_turns else []
    return turn


def _with_sources(turn: Turn) -> dict[str, object]:
    return {"sources": turn.sources, "degraded": turn.degraded, "session_id": turn.session_id}


@router.get("/models")
async def models() -> dict[str, object]:
    return {
        "object": "list",
        "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": f"ragvigil {__version__}"}],
    }


@router.post("/chat/completions")
async def chat_completions(
    body: OpenAIChatRequest,
    rt: Runtime = Depends(get_runtime),
    request_id: str | None = Depends(get_request_id),
    who: Principal = Depends(get_principal),
):  # type: ignore[no-untyped-def]
    turn = _turn(rt, body, request_id)
    turn.owner = caller_owner(who)  # the session it opens is the caller's
    await require_kb(rt, turn.kb)  # before a stream's 200: an unknown kb is a 404 like everywhere
    created = int(time.time())
    cid = f"chatcmpl-{turn.message_id}"
    if not body.stream:
        await run_in_threadpool(rt.pipeline.run, turn)
        return {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": turn.answer},
                    "finish_reason": "stop",
                }
            ],
            "usage": None,
            "ragvigil": _with_sources(turn),
        }

    def chunk(delta: dict[str, str], finish: str | None = None, extra: dict | None = None) -> str:
        payload = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if extra:
            payload["ragvigil"] = extra
        return f"data: {json.dumps(payload, ensure_ascii=False, default=str)}\n\n"

    def events() -> Iterator[str]:
        yield chunk({"role": "assistant", "content": ""})
        try:
            for delta in rt.pipeline.stream(turn):
                yield chunk({"content": delta})
            yield chunk({}, "stop", _with_sources(turn))
        except Exception as exc:  # headers are sent: report in-band like OpenAI does
            err = {
                "error": {
                    "message": f"{type(exc).__name__}: {exc}"[:300],
                    "type": "server_error",
                    "code": "stream_failed",
                }
            }
            yield f"data: {json.dumps(err)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
