"""HTTP receivers on loopback that record what they got (webhooks, Slack, IM robots)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Received:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    status: int = 200
    reply: bytes = b"ok"

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Received]:
        import time

        deadline = time.monotonic() + timeout
        while len(self.requests) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.requests


@contextmanager
def http_receiver(status: int = 200, reply: bytes = b"ok") -> Iterator[Receiver]:
    """A server on 127.0.0.1 answering every POST with ``status``/``reply`` and keeping the request."""
    box = Receiver("", status=status, reply=reply)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            box.requests.append(Received(parts.path, query, dict(self.headers), body))
            self.send_response(box.status)
            self.send_header("Content-Length", str(len(box.reply)))
            self.end_headers()
            self.wfile.write(box.reply)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.url = f"http://127.0.0.1:{server.server_port}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box
    finally:
        server.shutdown()
        server.server_close()
