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
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragvigil.api.errors import error_body
from ragvigil.api.http_protocols import ARRIVED_KEY
from ragvigil.api.openai_errors import openai_error_type
from ragvigil.ops import metrics
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
            # the whole body: its size is bounded by the request-context middleware outside
            body, receive, _ = await _buffered_upto(receive, math.inf)
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


class EarlyRefusal:
    """The 503 of a flood, answered before the app's middleware: what ``ragvigil serve``'s protocol runs
    instead of the app for a POST that arrives while every slot is taken and someone already waits.

    Why: under a burst of ten times the capacity most requests are refused, and each refusal that went
    through the whole stack (Starlette's middleware, the request context with its id, log line and
    trace, the drain gate) took CPU from the turns being answered. On a 2-core machine shared with
    another busy process, shed requests waited a median of 2.5 s for their 503 and goodput fell to
    0.88x. Here a refusal costs reading the body (a crisis turn is never refused; it goes on to the
    app), one prediction and the response; it is counted in ``ragvigil_admission_shed_total`` and in
    ``ragvigil_http_requests_total`` (so the error-rate alerts see it), but has no request id, log
    line or trace. Anything else, or a request that could still start within the wait, goes to the
    app unchanged.
    """

    def __init__(self, app: ASGIApp, admission: Admission, max_body_bytes: int) -> None:
        self.app, self.admission, self.max_body_bytes = app, admission, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or scope.get("method") != "POST" or path not in ANSWER_ROUTES:
            await self.app(scope, receive, send)
            return
        body, receive, complete = await _buffered_upto(receive, self.max_body_bytes)
        if not complete:  # over the limit or cut short: the app answers it (413, or the client left)
            await self.app(scope, receive, send)
            return
        adm = self.admission
        text, _ = _peek(path, body)
        priority = adm.priority_of(text, _presented_key(dict(scope.get("headers") or [])))
        arrived = scope.get(ARRIVED_KEY)
        waited = time.monotonic() - arrived if isinstance(arrived, float) else 0.0
        exc = adm.refuse_early(priority, waited)
        if exc is None:
            await self.app(scope, receive, send)
            return
        metrics.child(metrics.HTTP_REQUESTS, path, "POST", "503").inc()
        retry = [(b"retry-after", str(adm.retry_after_s()).encode())]
        message = f"the service is at capacity ({exc.reason.replace('_', ' ')}); retry shortly"
        await _refuse(send, path, 503, "overloaded", message, retry)


def early_refusal(app: Any) -> Callable[[ASGIApp], ASGIApp] | None:
    """What the protocol should run instead of ``inner`` for a POST now: an ``EarlyRefusal`` in front of
    it while the instance's admission gate is saturated, else ``None`` (run the app as usual).

    ``app`` is the FastAPI app ``ragvigil serve`` serves; its runtime (made at start-up) holds the gate.
    """
    rt = getattr(getattr(app, "state", None), "runtime", None)
    adm: Admission | None = getattr(rt, "admission", None)
    if adm is None or not adm.enabled or getattr(rt, "draining", False) or not adm.gate.saturated():
        return None
    limit = rt.settings.max_body_bytes
    return lambda inner: EarlyRefusal(inner, adm, limit)


def _admission(scope: Scope) -> Admission | None:
    rt = getattr(getattr(scope.get("app"), "state", None), "runtime", None)
    return getattr(rt, "admission", None)


def _presented_key(headers: dict[bytes, bytes]) -> str | None:
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return headers.get(b"x-api-key", b"").decode("latin-1") or None


async def _buffered_upto(receive: Receive, limit: float) -> tuple[bytes, Callable[[], Awaitable[Message]], bool]:
    """The body if it is whole and at most ``limit`` bytes (else what was read, replayed to the app in
    front of the rest: its own limit answers 413), a receive replaying it, and whether it was whole."""
    chunks: list[bytes] = []
    size, complete = 0, False
    early: Message | None = None
    while True:
        message = await receive()
        if message["type"] != "http.request":
            early = message
            break
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            complete = True
            break
        if size > limit:
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            if early is not None and not chunks:
                return early
            return {"type": "http.request", "body": body, "more_body": not complete}
        if early is not None:
            return early
        return await receive()

    return body, replay, complete and size <= limit


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
