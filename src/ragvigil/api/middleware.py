"""ASGI middleware: request ids, access metrics and logs, and the request body size limit."""

from __future__ import annotations

import json
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragvigil.api.errors import internal_error_body
from ragvigil.ops import instrumentation, metrics, semconv, tracing
from ragvigil.ops.access import Principal
from ragvigil.ops.logging import access_fields_var, log_access, request_id_var, session_id_var, user_id_var

_CONTEXT_VARS = (request_id_var, session_id_var, user_id_var, access_fields_var, tracing.current_spans)
_QUIET_ROUTES = frozenset({"/metrics", "/health/live", "/health/ready"})  # probes would drown the log


class _BodyTooLarge(Exception):
    pass


# What a caller's X-Request-ID may be: a plain id. Anything else (an email, free text, a header
# injection attempt) is ignored rather than written to the logs and traces.
_CALLER_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_API_KEY = re.compile(r"rv_[A-Za-z0-9_-]{20,}")  # the shape of ragvigil's own keys: a secret, never an id


def _request_id(headers: dict[bytes, bytes]) -> tuple[str, str | None]:
    """A new server-made request id, and the caller's X-Request-ID when it is a plain id (else None).

    The request id, not the caller's, names the request everywhere (logs, trace store, stored
    messages, the X-Request-ID sent back): a caller's id can be reused by anyone, so it must not pick
    whose trace a lookup finds. The caller's id is kept beside it, as ``client_request_id``.
    """
    rid = uuid.uuid4().hex
    raw = headers.get(b"x-request-id")
    if raw is None:
        return rid, None
    incoming = raw.decode("latin-1")
    if _CALLER_ID.fullmatch(incoming) is None or _API_KEY.search(incoming) is not None:
        return rid, None
    return rid, incoming


def trace_owner(principal: Principal | None) -> str | None:
    """Who a trace belongs to: the caller's key id (its name when auth is off), None when unknown."""
    if principal is None:
        return None
    return principal.key_id or principal.name


class RequestContextMiddleware:
    """X-Request-ID in and out, one access log line and the HTTP metrics per request."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, expose_errors: bool = False) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.expose_errors = expose_errors  # the 500's message names the exception (development, staging)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid, client_rid = _request_id(headers)
        state = scope.setdefault("state", {})
        state["request_id"], state["client_request_id"] = rid, client_rid
        declared = headers.get(b"content-length")
        too_large = declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes
        if not instrumentation.enabled:  # only the request id and the body limit, the parts clients rely on
            await (self._reject_too_large(send, rid) if too_large else self._serve(scope, receive, send, rid))
            return

        raw_method = scope.get("method", "GET")
        method = semconv.http_method(raw_method)  # a caller's odd token never reaches the log or labels raw
        spans: list[tracing.StageSpan] = []
        fields: dict[str, object] = {} if client_rid is None else {"client_request_id": client_rid}
        tokens = (
            request_id_var.set(rid),
            session_id_var.set(None),
            user_id_var.set(None),
            access_fields_var.set(fields),
            tracing.current_spans.set(spans),
        )
        status = 500
        start_ns = time.time_ns()
        start = time.perf_counter()
        metrics.IN_FLIGHT.value += 1
        try:
            if too_large:
                await self._reject_too_large(send, rid)
                status = 413
            else:
                status = await self._serve(scope, receive, send, rid)
        finally:
            metrics.IN_FLIGHT.value -= 1
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            instrumentation.later(
                _record,
                _Request(
                    rid, client_rid, headers.get(b"traceparent"), raw_method, scope, trace_owner(state.get("principal"))
                ),
                start_ns,
                elapsed,
                route,
                status,
                session_id_var.get(),
                spans,
            )
            if route not in _QUIET_ROUTES:
                fields.update(method=method, route=route, status=status, ms=round(elapsed * 1000, 2))
                log_access(fields)
            for var, tok in zip(_CONTEXT_VARS, tokens, strict=True):
                var.reset(tok)  # type: ignore[attr-defined]

    async def _serve(self, scope: Scope, receive: Receive, send: Send, rid: str) -> int:
        """Call the app with the body limit enforced and the request id added; returns the status sent.

        Both failures are answered here, inside the request context, so their responses carry the
        request id: a body over the limit gets its 413 from ``limited_receive`` itself (an exception
        raised there would reach the route's body parsing first, which turns any error into a 400),
        and an unhandled exception its JSON 500, logged once and not re-raised to the server.
        """
        received = 0
        status = 500
        started = False
        rejected = False  # the 413 went out: whatever the app sends after it is dropped

        async def limited_receive() -> Message:
            nonlocal received, started, rejected, status
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    if not started and not rejected:
                        rejected = started = True
                        status = 413
                        await self._reject_too_large(send, rid)
                    raise _BodyTooLarge
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if rejected:
                return
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_id)
        except _BodyTooLarge:
            status = 413
        except Exception as exc:
            if rejected:
                return 413
            token = request_id_var.set(rid)  # also when instrumentation is off
            try:
                body = internal_error_body(exc, self.expose_errors)
            finally:
                request_id_var.reset(token)
            if not started:  # else the response is cut short; the server closes the connection
                await self._send_json(send, rid, 500, body)
            status = 500
        return 413 if rejected else status

    async def _reject_too_large(self, send: Send, rid: str) -> None:
        body = json.dumps(
            {"code": "payload_too_large", "message": f"request body exceeds {self.max_body_bytes} bytes"}
        ).encode()
        await self._send_json(send, rid, 413, body)

    @staticmethod
    async def _send_json(send: Send, rid: str, status: int, body: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", rid.encode("latin-1")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _Request:
    """What the request's trace needs from its scope, read when it is recorded (off the request path)."""

    __slots__ = ("client_rid", "method", "owner", "path", "rid", "scheme", "traceparent", "version")

    def __init__(
        self, rid: str, client_rid: str | None, traceparent: bytes | None, method: str, scope: Scope, owner: str | None
    ) -> None:
        self.rid, self.client_rid, self.owner = rid, client_rid, owner
        self.traceparent, self.method = traceparent, method
        self.path: str = scope.get("path", "")
        self.scheme: str = scope.get("scheme", "http")
        self.version: str | None = scope.get("http_version")


def _record(
    req: _Request,
    start_ns: int,
    elapsed: float,
    route: str,
    status: int,
    session_id: str | None,
    spans: list[tracing.StageSpan],
) -> None:
    """The request's metrics and its trace, root and stages (run by ``instrumentation.later``).

    The root span follows the OpenTelemetry HTTP server conventions: ``{method} {route}`` as its
    name, status ERROR and ``error.type`` only for a 5xx. A 4xx is the caller's error, not the
    server's: the convention leaves a server span's status unset and sets no ``error.type`` for it;
    ``http.response.status_code`` is what tells it apart.
    """
    method = semconv.http_method(req.method)  # an unknown method is "_OTHER": labels stay bounded
    metrics.child(metrics.HTTP_REQUESTS, route, method, str(status)).inc()
    metrics.child(metrics.HTTP_DURATION, route, method).observe(elapsed)
    attributes: dict[str, object] = {
        semconv.HTTP_METHOD: method,
        semconv.HTTP_STATUS: status,
        semconv.URL_PATH: req.path[: semconv.MAX_PATH_CHARS],
        semconv.URL_SCHEME: req.scheme,
    }
    if method == "_OTHER":
        attributes[semconv.HTTP_METHOD_ORIGINAL] = req.method[:32]
    matched = route != "unmatched"
    if matched:
        attributes[semconv.HTTP_ROUTE] = route
    if req.version:
        attributes[semconv.PROTOCOL_VERSION] = req.version
    if status >= 500:
        attributes[semconv.ERROR_TYPE] = str(status)
    if session_id is not None:
        attributes[semconv.SESSION_ID] = session_id
    end_ns = start_ns + round(elapsed * 1e9)
    span_method = "HTTP" if method == "_OTHER" else method
    name = f"{span_method} {route}" if matched else span_method
    error = status >= 500
    tracing.keep(
        tracing.FinishedRequest(
            req.rid, name, req.traceparent, start_ns, end_ns, error, attributes, spans, req.owner, req.client_rid
        )
    )
