"""ASGI middleware: rate limits and the priority concurrency gate in front of the answer and upload routes.

Why a middleware and not a route dependency: the slot must be held until the response has been
sent, a stream included, and a refusal must cost no body validation, key lookup or thread hop.
Only the answer routes and uploads pass the gate; probes, /metrics and every ops route never do,
so an operator reaches them during an overload. The message is read from the body (bounded) only
to find a crisis turn; the route still validates the body itself.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragvigil.api.errors import error_body
from ragvigil.api.http_protocols import ARRIVED_KEY
from ragvigil.api.openai_errors import openai_error_type
from ragvigil.ops.admission import Admission, Shed

ANSWER_ROUTES = frozenset({"/api/v1/chat", "/api/v1/chat/stream", "/v1/chat/completions", "/v1/completions"})
_UPLOAD = re.compile(r"^/api/v1/kb/[^/]+/documents$")
# the statuses admission adds to a route's published responses (503 overloaded is declared everywhere)
OPENAPI_STATUSES = {p: ["429"] for p in (*ANSWER_ROUTES, "/api/v1/kb/{kb}/documents")}
MAX_PEEK_BYTES = 512 * 1024  # a larger body is still served, just not read for a crisis phrase here
MAX_USER_CHARS = 128


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        entered = time.monotonic()
        path: str = scope["path"]
        answer = path in ANSWER_ROUTES
        adm = _admission(scope)
        if adm is None or not adm.enabled or not (answer or _UPLOAD.match(path)):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        key = _presented_key(headers)
        client = scope.get("client")
        who = "key:" + hashlib.sha256(key.encode()).hexdigest()[:24] if key else f"addr:{client[0] if client else '-'}"
        text = user = None
        if answer:
            body, receive = await _buffered(receive)
            text, user = _peek(path, body)
        priority = adm.priority_of(text, key, background=not answer)
        now = time.time()
        decision = await adm.rates.check(who, user) if adm.rates.active else None
        extra = decision.headers(now) if decision is not None else []
        if decision is not None and not decision.allowed:
            adm.count_rate_limited(decision.scope)
            scope_name = "this user" if decision.scope == "user" else "this key"
            message = f"rate limit of {decision.limit} per {decision.window_s} s for {scope_name} reached; retry later"
            await _refuse(send, path, 429, "rate_limited", message, extra)
            return
        try:
            arrived = scope.get(ARRIVED_KEY)
            waited = entered - arrived if isinstance(arrived, float) else 0.0
            permit = await adm.admit(priority, sampled=answer, waited_s=waited)
        except Shed as exc:
            retry = [(b"retry-after", str(adm.retry_after_s()).encode())]
            message = f"the service is at capacity ({exc.reason.replace('_', ' ')}); retry shortly"
            await _refuse(send, path, 503, "overloaded", message, [*extra, *retry])
            return

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start" and extra:
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_limits)
        finally:
            adm.release(permit)


def _admission(scope: Scope) -> Admission | None:
    rt = getattr(getattr(scope.get("app"), "state", None), "runtime", None)
    return getattr(rt, "admission", None)


def _presented_key(headers: dict[bytes, bytes]) -> str | None:
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return headers.get(b"x-api-key", b"").decode("latin-1") or None


async def _buffered(receive: Receive) -> tuple[bytes, Callable[[], Awaitable[Message]]]:
    """The whole body (its size is bounded by the request-context middleware outside), and a receive replaying it."""
    chunks: list[bytes] = []
    early: Message | None = None
    while True:
        message = await receive()
        if message["type"] != "http.request":
            early = message  # the client left before sending it all: the route sees that
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return early or {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


def _peek(path: str, body: bytes) -> tuple[str | None, str | None]:
    """The user's text and user id of an answer request, when the body is readable JSON of the usual shape."""
    if len(body) > MAX_PEEK_BYTES:
        return None, None
    try:
        data: Any = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    if path.startswith("/api/"):
        text, user = data.get("message"), data.get("user_id")
    elif path == "/v1/chat/completions":
        text, user = _last_user_text(data.get("messages")), data.get("user")
    else:
        prompt = data.get("prompt")
        text = " ".join(p for p in prompt if isinstance(p, str)) if isinstance(prompt, list) else prompt
        user = data.get("user")
    return (text if isinstance(text, str) else None), (user[:MAX_USER_CHARS] if isinstance(user, str) else None)


def _last_user_text(messages: Any) -> str | None:
    if not isinstance(messages, list):
        return None
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return content if isinstance(content, str) else None
    return None


async def _refuse(send: Send, path: str, status: int, code: str, message: str, headers: list) -> None:
    body: dict[str, Any] = error_body(code, message)
    if path.startswith("/v1/"):  # the OpenAI SDKs read this shape (see openai_errors)
        body["error"] = {"message": message, "type": openai_error_type(status), "param": None, "code": code}
    raw = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})
