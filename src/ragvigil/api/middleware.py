"""ASGI middleware: request ids, access metrics and logs, and the request body size limit."""

from __future__ import annotations

import json
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragvigil.api.errors import internal_error_body
from ragvigil.ops import instrumentation, metrics, tracing
from ragvigil.ops.logging import access_fields_var, log_access, request_id_var, session_id_var, user_id_var

_CONTEXT_VARS = (request_id_var, session_id_var, user_id_var, access_fields_var, tracing.current_spans)
_QUIET_ROUTES = frozenset({"/metrics", "/health/live", "/health/ready"})  # probes would drown the log


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


class _BodyTooLarge(Exception):
    pass


def _method(scope: Scope) -> str:
    """The HTTP method, or "_OTHER" (OpenTelemetry's name) for any other token a caller sent: the value
    goes unredacted into the access line and into metric labels, so it must be one ragvigil knows."""
    method = scope.get("method", "GET")
    return method if method in _METHODS else "_OTHER"


def _request_id(headers: dict[bytes, bytes]) -> str:
    """The caller's X-Request-ID when it is sane (printable, at most 128 chars), else a new one."""
    incoming = headers.get(b"x-request-id", b"").decode("latin-1")
    return incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else uuid.uuid4().hex


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
        rid = _request_id(headers)
        scope.setdefault("state", {})["request_id"] = rid
        declared = headers.get(b"content-length")
        too_large = declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes
        if not instrumentation.enabled:  # only the request id and the body limit, the parts clients rely on
            await (self._reject_too_large(send, rid) if too_large else self._serve(scope, receive, send, rid))
            return

        method = _method(scope)
        spans: list[tracing.StageSpan] = []
        fields: dict[str, object] = {}
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
                rid,
                headers.get(b"traceparent"),
                start_ns,
                elapsed,
                route,
                method,
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


def _record(
    request_id: str,
    traceparent: bytes | None,
    start_ns: int,
    elapsed: float,
    route: str,
    method: str,
    status: int,
    session_id: str | None,
    spans: list[tracing.StageSpan],
) -> None:
    """The request's metrics and its trace, root and stages (run by ``instrumentation.later``)."""
    metrics.child(metrics.HTTP_REQUESTS, route, method, str(status)).inc()
    metrics.child(metrics.HTTP_DURATION, route, method).observe(elapsed)
    attributes: dict[str, object] = {"http.route": route, "http.status_code": status}
    if session_id is not None:
        attributes["session_id"] = session_id
    end_ns = start_ns + round(elapsed * 1e9)
    name = f"{method} {route}"
    tracing.keep(
        tracing.FinishedRequest(request_id, name, traceparent, start_ns, end_ns, status >= 500, attributes, spans)
    )
