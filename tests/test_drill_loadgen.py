"""The burst's load generator against a real loopback HTTP server: answers, sheds, kept-alive connections."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from ragvigil.ops.drills.client import InstanceClient
from ragvigil.ops.drills.loadgen import ChatLoad
from ragvigil.ops.drills.traffic import Users, open_loop


class _Chat(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn answers
    connections: ClassVar[int] = 0
    requests: ClassVar[list[dict]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    def setup(self) -> None:
        with self.lock:
            type(self).connections += 1
        super().setup()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        with self.lock:
            n = len(self.requests)
            self.requests.append({"body": body, "auth": self.headers.get("authorization")})
        if n % 3 == 2:  # every third request is shed
            self._send(503, {"code": "overloaded", "message": "at capacity"}, {"Retry-After": "1"})
        else:
            self._send(200, {"session_id": body.get("session_id") or f"s{n}", "message_id": f"m{n}", "degraded": False})

    def _send(self, status: int, data: dict, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def chat_server() -> Iterator[str]:
    _Chat.connections, _Chat.requests = 0, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Chat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_open_loop_over_http_sees_answers_and_sheds_and_keeps_its_sessions(chat_server: str) -> None:
    client = InstanceClient(chat_server, user_key="rv_user")
    users = Users(client, 4, "gen")
    traffic = open_loop(users, rate_per_s=200, duration_s=0.5, max_requests=60)
    client.close()
    outs = traffic.snapshot()
    assert len(outs) == 60 and not [o for o in outs if o.failed]
    answered, shed = [o for o in outs if o.answered], [o for o in outs if o.shed]
    assert len(answered) == 40 and len(shed) == 20 and all(o.status == 503 for o in shed)
    assert all(s is not None for s in users.sessions)  # each user's first answer opened its session
    assert {r["auth"] for r in _Chat.requests} == {"Bearer rv_user"}
    later = [r["body"] for r in _Chat.requests[8:]]
    assert all(b.get("session_id") for b in later if b["user_id"] == "gen-0")  # then the session is reused
    assert _Chat.connections < 60  # kept alive, not one connection per request


def test_a_server_that_is_gone_is_an_outcome_not_an_exception() -> None:
    import asyncio

    async def ask() -> int:
        load = ChatLoad("http://127.0.0.1:9", None, 2.0)  # the discard port: nothing listens
        out = await load.chat("hi", None, "u")
        load.close()
        return out.status

    assert asyncio.run(ask()) == 0
    with pytest.raises(ValueError):
        ChatLoad("https://example.invalid", None, 1.0)
