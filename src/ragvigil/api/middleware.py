"""ASGI middleware: request ids, access metrics and logs, and the request body size limit."""

from __future__ import annotations

import json
import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragvigil.ops import instrumentation, metrics, tracing
from ragvigil.ops.logging import request_id_var, session_id_var, user_id_var

log = logging.getLogger("ragvigil.access")


class _BodyTooLarge(Exception):
    pass


def _request_id(headers: dict[bytes, bytes]) -> str:
    """The caller's X-Request-ID when it is sane (printable, at most 128 chars), else a new one."""
    incoming = headers.get(b"x-request-id", b"").decode("latin-1")
    return incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else uuid.uuid4().hex


class RequestContextMiddleware:
    """X-Request-ID in and out, one access log line and the HTTP metrics per request."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not instrumentation.enabled:
            if scope["type"] == "http":
                await self._bare(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = _request_id(headers)
        tokens = (request_id_var.set(rid), session_id_var.set(None), user_id_var.set(None))
        scope.setdefault("state", {})["request_id"] = rid
        status = 500
        start = time.perf_counter()

        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._reject_too_large(send, rid)
            self._observe(scope, 413, start)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge
            return message

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        metrics.HTTP_IN_FLIGHT.inc()
        span_cm = tracing.tracer().start_as_current_span(f"HTTP {scope.get('method', 'GET')}")
        span = span_cm.__enter__()
        span.set_attribute(tracing.REQUEST_ID_ATTR, rid)
        try:
            await self.app(scope, limited_receive, send_with_id)
        except _BodyTooLarge:
            if not started:
                await self._reject_too_large(send, rid)
            status = 413
        finally:
            metrics.HTTP_IN_FLIGHT.dec()
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            span.update_name(f"{scope.get('method', 'GET')} {route}")
            tracing.set_attributes(
                span,
                **{"http.route": route, "http.status_code": status, "session_id": session_id_var.get()},
            )
            span_cm.__exit__(None, None, None)
            self._observe(scope, status, start)
            for var, tok in zip((request_id_var, session_id_var, user_id_var), tokens, strict=True):
                var.reset(tok)

    async def _bare(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Instrumentation off: only the request id and the body limit, the parts clients rely on."""
        headers = dict(scope.get("headers") or [])
        rid = _request_id(headers)
        scope.setdefault("state", {})["request_id"] = rid
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._reject_too_large(send, rid)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        await self.app(scope, receive, send_with_id)

    async def _reject_too_large(self, send: Send, rid: str) -> None:
        body = json.dumps(
            {"code": "payload_too_large", "message": f"request body exceeds {self.max_body_bytes} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", rid.encode("latin-1")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def _observe(scope: Scope, status: int, start: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        elapsed = time.perf_counter() - start
        method = scope.get("method", "GET")
        metrics.HTTP_REQUESTS.labels(template, method, str(status)).inc()
        metrics.HTTP_DURATION.labels(template, method).observe(elapsed)
        if template not in ("/metrics", "/health/live", "/health/ready"):
            log.info(
                "http_request",
                extra={"method": method, "route": template, "status": status, "ms": round(elapsed * 1000, 2)},
            )
