"""A small OpenAI-compatible chat server on 127.0.0.1 whose answers the test holds back.

Why: to test what happens to a turn *while* it is being generated (a client hanging up, a
shutdown), the generation must be reliably in progress. This server streams the first piece
of its answer at once and the rest only when the test calls ``release()`` (or after
``hold_s`` seconds, so nothing waits forever). Real HTTP, real SSE, real httpx client in
ragvigil: nothing in ragvigil is mocked.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = ["Shipping", " takes three days", " [1]."]


@dataclass
class SlowLLM:
    url: str
    hold_s: float
    gate: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)  # a generation has begun
    requests: int = 0  # generations asked for so far

    def release(self) -> None:
        self.gate.set()

    @property
    def answer(self) -> str:
        return "".join(ANSWER)


def _handler(llm: SlowLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            return

        def do_GET(self) -> None:
            body = json.dumps({"object": "list", "data": [{"id": "slow", "object": "model"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            llm.requests += 1  # one handler thread per request; the test only reads it
            llm.started.set()
            if not req.get("stream"):
                llm.gate.wait(llm.hold_s)
                body = json.dumps(
                    {"choices": [{"index": 0, "message": {"role": "assistant", "content": llm.answer}}]}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for i, piece in enumerate(ANSWER):
                    if i == 1:
                        llm.gate.wait(llm.hold_s)
                    chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            except OSError:
                return  # the client went away
            self.close_connection = True

    return Handler


@contextmanager
def slow_llm(hold_s: float = 30.0) -> Iterator[SlowLLM]:
    """Serve on a free loopback port; yields the server (``url`` is the OpenAI base URL, ending in /v1)."""
    llm = SlowLLM("", hold_s)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(llm))
    server.daemon_threads = True
    llm.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, name="slow-llm", daemon=True)
    thread.start()
    try:
        yield llm
    finally:
        llm.release()
        server.shutdown()
        server.server_close()
        thread.join(10)
