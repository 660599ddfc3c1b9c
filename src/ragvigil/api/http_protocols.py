"""uvicorn's HTTP protocols, answering a request they cannot parse with ragvigil's JSON error body.

Why: a request uvicorn's parser rejects (a broken request line, a header that is not a header, an
invalid chunked body) never reaches the app, so no exception handler sees it, and uvicorn answers
``text/plain`` "Invalid HTTP request received.". Every other error of the API is a JSON body with a
stable ``code``; a client that parses errors would break on exactly this one. Only the 400 that
uvicorn writes itself changes: the same status, ``connection: close``, and the same log warning.

They also stamp each request's scope with the time its bytes were parsed (``ARRIVED_KEY``,
``time.monotonic()``): under a flood the event loop runs a request's task late, and admission counts
that time as part of the request's wait for a slot (``PriorityGate.acquire``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

CODE = "bad_http_request"
ARRIVED_KEY = "ragvigil.arrived"  # scope key: time.monotonic() when the request's headers were parsed
MESSAGE = "the request is not valid HTTP/1.1 (its request line, a header or the body framing could not be parsed)"


def error_body(detail: str) -> bytes:
    """The JSON body of a request uvicorn's parser rejected (``detail``: what uvicorn said)."""
    return json.dumps({"code": CODE, "message": MESSAGE, "detail": detail[:200]}).encode()


class JsonErrorH11Protocol(H11Protocol):
    """h11, with the JSON body on a request it cannot parse, and the arrival stamp."""

    def handle_events(self) -> None:
        scope = getattr(self, "scope", None)
        super().handle_events()
        if self.scope is not scope:  # a request's scope was made from these bytes
            self.scope[ARRIVED_KEY] = time.monotonic()  # type: ignore[literal-required]

    def send_400_response(self, msg: str) -> None:
        body = error_body(msg)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"connection", b"close"),
        ]
        self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request")))
        self.transport.write(self.conn.send(h11.Data(data=body)))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()


EarlyApp = Callable[[], Callable[[Any], Any] | None]


def http_protocol(early: EarlyApp | None = None) -> type:
    """The protocol class ``ragvigil serve`` gives uvicorn: httptools when installed (uvicorn's "auto"), else h11.

    ``early``: asked at each POST's headers (httptools only) for a wrapper to run the request with
    instead of the app — ``api.admission.early_refusal``, which refuses a flood before the middleware;
    ``None`` (its answer, or no ``early`` at all) runs the app as usual."""
    try:
        from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
    except ImportError:  # httptools is optional: uvicorn's "auto" falls back to h11 the same way
        return JsonErrorH11Protocol

    class JsonErrorHttpToolsProtocol(HttpToolsProtocol):
        """httptools, with the JSON body on a request it cannot parse, and the arrival stamp."""

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.scope[ARRIVED_KEY] = time.monotonic()  # type: ignore[literal-required]

        def on_headers_complete(self) -> None:
            wrap = early() if early is not None and self.parser.get_method() == b"POST" else None
            if wrap is None:
                super().on_headers_complete()
                return
            app = self.app  # uvicorn starts the request's task with self.app, inside the call below
            self.app = wrap(app)
            try:
                super().on_headers_complete()
            finally:
                self.app = app

        def send_400_response(self, msg: str) -> None:
            body = error_body(msg)
            content = [STATUS_LINE[400]]
            for name, value in self.server_state.default_headers:
                content.extend([name, b": ", value, b"\r\n"])
            content.extend(
                [
                    b"content-type: application/json\r\n",
                    b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                    b"connection: close\r\n",
                    b"\r\n",
                    body,
                ]
            )
            self.transport.write(b"".join(content))
            self.transport.close()

    return JsonErrorHttpToolsProtocol
