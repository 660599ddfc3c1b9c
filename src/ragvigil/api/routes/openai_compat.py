"""OpenAI-compatible ``/v1`` routes so existing clients and SDKs can talk to ragvigil.

``/v1/chat/completions``: the last user message is the question (every user message must have
text); earlier user/assistant messages are the history. ``/v1/completions``: the prompt is the question. The client's ``user`` field keeps
no server state here: each call is answered from what it carries, and persisted as a new session.
Parameters that would change the shape of the answer and that ragvigil cannot honour (``n`` > 1,
tools, JSON output, log-probabilities) are refused with a 400 naming the parameter, as OpenAI does,
rather than ignored; the published schema allows only the values that are honoured, so a client
generated from it is never refused. Errors carry OpenAI's ``error`` object as well as ragvigil's own fields.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ragvigil import __version__
from ragvigil.api.deps import get_principal, get_request_id, get_runtime, require
from ragvigil.api.errors import ApiError
from ragvigil.api.openai_errors import OpenAIErrorRoute, unsupported
from ragvigil.api.openai_usage import usage
from ragvigil.api.schemas import OpenAIChatRequest, OpenAICompletionRequest, OpenAIMessage, without_blank
from ragvigil.api.session_access import caller_owner, require_kb
from ragvigil.app import Runtime
from ragvigil.chat.pipeline import Turn
from ragvigil.config import Settings
from ragvigil.ops.access import Principal, Role
from ragvigil.storage.text import unstorable_reason

router = APIRouter(
    prefix="/v1",
    tags=["openai-compatible"],
    dependencies=[Depends(require(Role.client))],
    route_class=OpenAIErrorRoute,
)
MODEL = "ragvigil"
_MODEL_CARD = {"id": MODEL, "object": "model", "created": 0, "owned_by": f"ragvigil {__version__}"}


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "validation_error", f"{field}: {message}", field)


def _refuse_unsupported_common(body: OpenAIChatRequest | OpenAICompletionRequest) -> None:
    if body.n not in (None, 1):
        raise unsupported("n", "only n=1 is supported: ragvigil gives one answer per request")
    if body.logprobs:
        raise unsupported("logprobs", "log-probabilities are not available from ragvigil")


def _refuse_unsupported_chat(body: OpenAIChatRequest) -> None:
    _refuse_unsupported_common(body)
    if body.top_logprobs:
        raise unsupported("top_logprobs", "log-probabilities are not available from ragvigil")
    for name in ("tools", "functions"):
        if getattr(body, name):
            raise unsupported(name, f"{name} are not supported: ragvigil answers from its knowledge base")
    for name in ("tool_choice", "function_call"):
        if getattr(body, name) not in (None, "none", "auto"):
            raise unsupported(name, f"{name} is not supported: ragvigil calls no tools")
    if body.response_format is not None and body.response_format.get("type", "text") != "text":
        raise unsupported("response_format", 'only {"type": "text"} is supported')


def _check_text(field: str, text: object, limit: int) -> int:
    """The length of one piece of a message's text, which must be storable text within ``limit``."""
    if not isinstance(text, str):
        raise _invalid(field, "must be a string")
    if reason := unstorable_reason(text):
        raise _invalid(field, reason)
    if len(text) > limit:
        raise _invalid(field, f"longer than {limit} characters")
    return len(text)


def _check_message(settings: Settings, i: int, message: OpenAIMessage) -> int:
    """One message's length. A user message must say something: any of them may be the question a
    client means (the last one is), and a blank one is a mistake the client should hear about."""
    field = f"messages.{i}.content"
    limit = settings.max_message_chars if message.role == "user" else settings.max_context_message_chars
    if isinstance(message.content, list):
        for j, part in enumerate(message.content):
            if part.get("type") != "text":
                raise unsupported(f"{field}.{j}.type", "only text content parts are supported")
            _check_text(f"{field}.{j}.text", part.get("text"), limit)
    elif message.content is not None:
        _check_text(field, message.content, limit)
    length = len(message.text())
    if length > limit:  # parts that are each within the limit, but not together
        raise _invalid(field, f"longer than {limit} characters")
    if message.role == "user" and not without_blank(message.text()):
        raise _invalid(field, "a user message must not be blank")
    return length


def _check_messages(settings: Settings, body: OpenAIChatRequest) -> None:
    """Every message is bounded, not only the question: earlier user messages feed retrieval of follow-ups,
    so they have the question's limit; system/assistant/tool messages only reach the LLM's prompt."""
    if len(body.messages) > settings.max_request_messages:
        raise _invalid("messages", f"at most {settings.max_request_messages} messages per request")
    total = sum(_check_message(settings, i, m) for i, m in enumerate(body.messages))
    if total > settings.max_request_chars:
        raise _invalid("messages", f"the messages together are longer than {settings.max_request_chars} characters")
    if not any(m.role == "user" for m in body.messages):
        raise _invalid("messages", "messages must contain a user message: the last one is the question")


def _chat_turn(rt: Runtime, body: OpenAIChatRequest, request_id: str | None) -> Turn:
    _refuse_unsupported_chat(body)
    _check_messages(rt.settings, body)
    last = max(i for i, m in enumerate(body.messages) if m.role == "user")
    question = without_blank(body.messages[last].text())
    turn = Turn(message=question, kb=rt.settings.default_kb, user_id=body.user, request_id=request_id)
    history = [(m.role, m.text()) for m in body.messages[:last] if m.role in ("user", "assistant")]
    turn.history = history[-2 * rt.settings.retrieval.history_turns :] if rt.settings.retrieval.history_turns else []
    return turn


def _completion_turn(rt: Runtime, body: OpenAICompletionRequest, request_id: str | None) -> Turn:
    _refuse_unsupported_common(body)
    if body.best_of not in (None, 1):
        raise unsupported("best_of", "only best_of=1 is supported: ragvigil gives one answer per request")
    if body.echo:
        raise unsupported("echo", "echo is not supported")
    if body.suffix:
        raise unsupported("suffix", "suffix (insertion) is not supported")
    prompt = body.prompt
    if isinstance(prompt, list):
        if any(not isinstance(p, str) for p in prompt):
            raise unsupported("prompt", "token-id prompts are not supported: send the prompt as text")
        if len(prompt) > 1:
            raise unsupported("prompt", "one prompt per request is supported")
        prompt = prompt[0] if prompt else ""
    assert isinstance(prompt, str)
    if not without_blank(prompt):
        raise _invalid("prompt", "the prompt must not be blank")
    _check_text("prompt", prompt, rt.settings.max_message_chars)
    return Turn(message=without_blank(prompt), kb=rt.settings.default_kb, user_id=body.user, request_id=request_id)


async def _owned(rt: Runtime, turn: Turn, who: Principal) -> Turn:
    """The turn, owned by the caller, for a knowledge base that exists (checked before a stream's 200)."""
    turn.owner = caller_owner(who)  # the session it opens is the caller's
    await require_kb(rt, turn.kb)  # an unknown kb is a 404 like everywhere
    return turn


def _with_sources(turn: Turn) -> dict[str, object]:
    return {
        "sources": turn.sources,
        "degraded": turn.degraded,
        "session_id": turn.session_id,
        "replaced": turn.replaced,
    }


def _extensions(turn: Turn) -> dict[str, object]:
    """ragvigil's fields beside OpenAI's (an SDK keeps them in ``model_extra``): what was understood, done."""
    return {
        "analysis": turn.analysis.to_dict() if turn.analysis is not None else None,
        "handoff": turn.handoff.to_dict() if turn.handoff is not None else None,
        "ragvigil": _with_sources(turn),
    }


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, default=str)}\n\n"


def _stream(
    rt: Runtime,
    turn: Turn,
    chunk: Callable[[str | None, str | None], dict[str, Any]],
    prompt_text: str,
    include_usage: bool,
) -> StreamingResponse:
    """OpenAI's server-sent events: a chunk per delta, one with the finish reason, the usage one if asked."""

    def frame(payload: dict[str, Any]) -> str:
        if include_usage:
            payload["usage"] = None  # as OpenAI: null on every chunk but the last
        return _sse(payload)

    stream = rt.pipeline.start_stream(turn)  # runs to its end even if the client hangs up

    async def events() -> AsyncIterator[str]:
        yield frame(chunk("", None))
        async for kind, data in stream.events():
            if kind == "delta" and data:
                yield frame(chunk(data, None))
            elif kind == "done":
                yield frame({**chunk(None, "stop"), **_extensions(turn)})
                if include_usage:
                    yield _sse({**chunk(None, None), "choices": [], "usage": usage(turn, prompt_text)})
            elif kind == "error":  # headers are sent: report in-band like OpenAI does
                message = f"{type(data).__name__}: {data}"[:300]
                err = {"message": message, "type": "server_error", "code": "stream_failed", "param": None}
                yield _sse({"error": err, "code": "stream_failed", "message": message})
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get("/models")
async def models() -> dict[str, object]:
    return {"object": "list", "data": [_MODEL_CARD]}


@router.get("/models/{model_id:path}")
async def model(model_id: str = Path(examples=[MODEL])) -> dict[str, object]:
    if model_id != MODEL:
        raise ApiError(404, "model_not_found", f"no model named {model_id[:100]!r}; this server serves {MODEL!r}")
    return _MODEL_CARD


_EVENT = {  # each server-sent event (OpenAPI 3.1 reads the schema of an event stream as one event's)
    "type": "object",
    "properties": {"data": {"type": "string", "description": "a chunk as JSON, or `[DONE]` at the end"}},
    "required": ["data"],
}
# with "stream": true the answer is OpenAI's server-sent events, else one JSON object
_STREAMED = {
    200: {
        "description": "The completion: JSON, or with `stream: true` server-sent events of chunks ending `data: [DONE]`",
        "content": {"application/json": {}, "text/event-stream": {"schema": _EVENT}},
    }
}


@router.post("/chat/completions", responses=_STREAMED)
async def chat_completions(
    body: OpenAIChatRequest,
    rt: Runtime = Depends(get_runtime),
    request_id: str | None = Depends(get_request_id),
    who: Principal = Depends(get_principal),
):  # type: ignore[no-untyped-def]
    turn = await _owned(rt, _chat_turn(rt, body, request_id), who)
    created = int(time.time())
    cid = f"chatcmpl-{turn.message_id}"
    prompt_text = "\n".join(m.text() for m in body.messages)
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
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage(turn, prompt_text),
            **_extensions(turn),
        }

    def chunk(delta: str | None, finish: str | None) -> dict[str, Any]:
        content = {} if delta is None else {"content": delta}
        if delta == "":
            content["role"] = "assistant"
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": MODEL,
            "choices": [{"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}],
        }

    return _stream(rt, turn, chunk, prompt_text, body.include_usage)


@router.post("/completions", responses=_STREAMED)
async def completions(
    body: OpenAICompletionRequest,
    rt: Runtime = Depends(get_runtime),
    request_id: str | None = Depends(get_request_id),
    who: Principal = Depends(get_principal),
):  # type: ignore[no-untyped-def]
    """Legacy text completions (LlamaIndex's ``OpenAILike(is_chat_model=False)``, older SDK code)."""
    turn = await _owned(rt, _completion_turn(rt, body, request_id), who)
    created = int(time.time())
    cid = f"cmpl-{turn.message_id}"
    if not body.stream:
        await run_in_threadpool(rt.pipeline.run, turn)
        return {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": MODEL,
            "choices": [{"index": 0, "text": turn.answer, "logprobs": None, "finish_reason": "stop"}],
            "usage": usage(turn, turn.message),
            **_extensions(turn),
        }

    def chunk(delta: str | None, finish: str | None) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": MODEL,
            "choices": [{"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}],
        }

    return _stream(rt, turn, chunk, turn.message, body.include_usage)
