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

# the first piece is a whole sentence: ragvigil relays a stream a checked sentence at a time (chat.answer_check)
FIRST = "Shipping is on its way."
ANSWER = [FIRST, " It takes three days", " [1]."]


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


# --- a scripted endpoint: each request gets the next behaviour of a list ------------------------
@dataclass
class Reply:
    """How the scripted server answers one chat request.

    ``status`` other than 200 sends ``body`` with ``headers`` (e.g. ``{"Retry-After": "1"}``);
    ``hang_s`` waits that long before answering (or until the server stops); ``chunk_delay_s``
    drips a stream's pieces; ``malformed`` sends a 200 that is not a chat completion.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    hang_s: float = 0.0
    chunk_delay_s: float = 0.0
    malformed: bool = False
    text: str = "Shipping takes three days [1]."


@dataclass
class ScriptedLLM:
    url: str
    script: list[Reply]  # consumed in order; the last one repeats
    requests: list[dict] = field(default_factory=list)  # every chat request body, in order
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set(self, *replies: Reply) -> None:
        with self.lock:
            self.script[:] = list(replies)

    def next_reply(self, body: dict) -> Reply:
        with self.lock:
            self.requests.append(body)
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    @property
    def calls(self) -> int:
        return len(self.requests)


def _scripted_handler(llm: ScriptedLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            return

        def _send(self, status: int, body: bytes, headers: dict[str, str], ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(
                200, json.dumps({"object": "list", "data": [{"id": "scripted", "object": "model"}]}).encode(), {}
            )

        def do_POST(self) -> None:
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            reply = llm.next_reply(req)
            try:
                if reply.hang_s:
                    llm.stop.wait(reply.hang_s)
                if reply.status != 200:
                    self._send(
                        reply.status, (reply.body or '{"error": {"message": "scripted"}}').encode(), reply.headers
                    )
                    return
                if reply.malformed:
                    self._send(200, b'{"choices": []}', {})
                    return
                if not req.get("stream"):
                    msg = {"role": "assistant", "content": reply.text}
                    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
                    self._send(
                        200, json.dumps({"choices": [{"index": 0, "message": msg}], "usage": usage}).encode(), {}
                    )
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                for piece in reply.text.split(" "):
                    if reply.chunk_delay_s:
                        llm.stop.wait(reply.chunk_delay_s)
                    chunk = {"choices": [{"index": 0, "delta": {"content": piece + " "}}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True
            except OSError:
                return  # the client went away

    return Handler


@contextmanager
def scripted_llm(*script: Reply) -> Iterator[ScriptedLLM]:
    """An OpenAI-compatible server on a free loopback port answering as ``script`` says (default: 200)."""
    llm = ScriptedLLM("", list(script) or [Reply()])
    server = ThreadingHTTPServer(("127.0.0.1", 0), _scripted_handler(llm))
    server.daemon_threads = True
    llm.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, name="scripted-llm", daemon=True)
    thread.start()
    try:
        yield llm
    finally:
        llm.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
