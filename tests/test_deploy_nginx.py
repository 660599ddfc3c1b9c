"""deploy/nginx/ragvigil.conf: valid (nginx -t), and a real nginx in front of two loopback upstreams shows
the rules it states: a request refused with 503 answered by the other upstream (a POST too), a POST
answered with another error never sent twice, a POST retried after a connect error, streamed answers
relayed unbuffered."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from ragvigil.api.routes.chat import router as chat_router
from tests.deploy_tools import NGINX_SITE, nginx_wrapper, tool
from tests.realservers import HOST, free_port
from tests.topology import nginx_server

REQUESTS = 12  # per phase: enough that both upstreams get some under round robin


class Upstream:
    """A loopback HTTP server answering every request with ``status``; counts what it received by method."""

    def __init__(self, status: int, stream_gate: threading.Event | None = None) -> None:
        self.status, self.gate = status, stream_gate
        self.seen: dict[str, int] = {}
        self.lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                with upstream.lock:
                    upstream.seen[self.command] = upstream.seen.get(self.command, 0) + 1
                if upstream.gate is not None:  # an SSE stream: one event now, the rest once the gate opens
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    self.wfile.write(b"data: first\n\n")
                    self.wfile.flush()
                    upstream.gate.wait(20)
                    self.wfile.write(b"data: done\n\n")
                    return
                body = b'{"code":"draining","message":"draining"}' if upstream.status == 503 else b"{}"
                self.send_response(upstream.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.address = f"{HOST}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Upstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.gate is not None:
            self.gate.set()
        self.server.shutdown()
        self.server.server_close()


def closed_address() -> str:
    """A loopback port nothing listens on: connecting to it is refused."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return f"{HOST}:{s.getsockname()[1]}"


@contextlib.contextmanager
def nginx(tmp: Path, upstreams: list[str], site: str | None = None) -> Iterator[str]:
    """The site file in front of ``upstreams`` (``tests.topology``'s starter; its log printed if it dies)."""
    tool("nginx", why=" (Debian's nginx)")  # missing: a skip here, a failure under CI
    with nginx_server(upstreams, tmp, site) as base:
        yield base


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    binary = tool("nginx", why=" (Debian's nginx)")
    conf = nginx_wrapper(NGINX_SITE.read_text(), ["127.0.0.1:1", "127.0.0.1:2"], free_port(), tmp_path)
    out = subprocess.run(
        [binary, "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    broken = NGINX_SITE.read_text().replace("proxy_buffering off;", "proxy_buffering of;")
    conf = nginx_wrapper(broken, ["127.0.0.1:1", "127.0.0.1:2"], free_port(), tmp_path)
    out = subprocess.run(
        [binary, "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode != 0 and "proxy_buffering" in out.stderr


def test_the_config_states_the_upstream_rules() -> None:
    conf = "\n".join(line for line in NGINX_SITE.read_text().splitlines() if not line.lstrip().startswith("#"))
    assert len(re.findall(r"server ragvigil-\d+:8000 max_fails=\d+ fail_timeout=\d+s;", conf)) == 2
    retry = re.search(r"^\s*proxy_next_upstream (.+);", conf, flags=re.M)
    assert retry and retry[1].split() == ["error", "timeout", "http_502", "http_503"]
    # a POST (a chat turn) goes to a second replica only after a 503 (refused, nothing kept), never after
    # a timeout or a broken connection: non_idempotent only in the locations a 503 leads to
    for rule in re.findall(r"^\s*proxy_next_upstream (.+);", conf, flags=re.M):
        assert "non_idempotent" not in rule or rule.split() == ["http_503", "non_idempotent"], rule
    assert re.search(r"^\s*error_page 503 = @refused;", conf, flags=re.M)
    for directive in ("proxy_connect_timeout", "proxy_read_timeout", "proxy_send_timeout", "client_max_body_size"):
        assert re.search(rf"^\s*{directive} \S+;", conf, flags=re.M), directive
    stream = re.search(r"location ~ \^/\((?P<paths>[^)]+)\)\$ \{(?P<body>[^}]+)\}", conf)
    assert stream and "proxy_buffering off;" in stream["body"]
    chat_stream = next(r.path for r in chat_router.routes if getattr(r, "path", "").endswith("/stream"))
    assert chat_stream.lstrip("/") in stream["paths"].split("|")


def test_requests_a_draining_replica_refuses_are_answered_by_the_other_one(tmp_path: Path) -> None:
    with (
        Upstream(503) as draining,
        Upstream(200) as healthy,
        nginx(tmp_path, [draining.address, healthy.address]) as base,
    ):
        posts = [httpx.post(base + "/api/v1/chat", json={"message": "hi"}, timeout=10) for _ in range(REQUESTS)]
        # a POST refused with 503 (nothing kept) went on to the healthy replica, once; every one answered
        assert [r.status_code for r in posts] == [200] * REQUESTS
        assert draining.seen.get("POST", 0) > 0, "round robin never sent a POST to the first replica"
        assert healthy.seen["POST"] == REQUESTS
        gets = [httpx.get(base + "/api/v1/kb", timeout=10) for _ in range(REQUESTS)]
        assert [r.status_code for r in gets] == [200] * REQUESTS
        assert healthy.seen["GET"] == REQUESTS


def test_a_503_from_every_replica_reaches_the_client_as_ragvigil_sent_it(tmp_path: Path) -> None:
    with Upstream(503) as first, Upstream(503) as second, nginx(tmp_path, [first.address, second.address]) as base:
        r = httpx.post(base + "/api/v1/chat", json={"message": "hi"}, timeout=10)
        assert r.status_code == 503 and r.json()["code"] == "draining"  # the JSON body, not nginx's page
        assert first.seen["POST"] + second.seen["POST"] <= 3  # bounded: one pass, then one more


def test_a_post_answered_with_another_error_is_never_sent_twice(tmp_path: Path) -> None:
    with Upstream(502) as broken, Upstream(200) as healthy, nginx(tmp_path, [broken.address, healthy.address]) as base:
        posts = [httpx.post(base + "/api/v1/chat", json={"message": "hi"}, timeout=10) for _ in range(REQUESTS)]
        # the replica may have kept the turn: its answer reaches the client, no second replica sees it
        assert broken.seen.get("POST", 0) + healthy.seen.get("POST", 0) == REQUESTS
        assert broken.seen.get("POST", 0) > 0, "round robin never sent a POST to the first replica"
        assert sum(r.status_code == 502 for r in posts) == broken.seen["POST"]


def test_a_post_is_retried_when_the_replica_refuses_the_connection(tmp_path: Path) -> None:
    with Upstream(200) as healthy, nginx(tmp_path, [closed_address(), healthy.address]) as base:
        posts = [httpx.post(base + "/api/v1/chat", json={"message": "hi"}, timeout=10) for _ in range(REQUESTS)]
        assert [r.status_code for r in posts] == [200] * REQUESTS
        assert healthy.seen["POST"] == REQUESTS


def _first_event_before_the_end(base: str, gate: threading.Event) -> bool:
    """Whether the first SSE event reaches the client while the upstream still holds the rest back."""
    with httpx.stream("POST", base + "/api/v1/chat/stream", json={"message": "hi"}, timeout=20) as r:
        chunks = r.iter_bytes()
        got = threading.Event()

        def read_first() -> None:
            for chunk in chunks:
                if b"data: first" in chunk:
                    got.set()
                    return

        reader = threading.Thread(target=read_first, daemon=True)
        reader.start()
        early = got.wait(5)  # bounded: the upstream holds "done" back until the gate opens
        gate.set()
        reader.join(20)
        return early


def test_streamed_answers_are_relayed_as_they_come(tmp_path: Path) -> None:
    gate = threading.Event()
    with (
        Upstream(200, stream_gate=gate) as streaming,
        nginx(tmp_path, [streaming.address, streaming.address]) as base,
    ):
        assert _first_event_before_the_end(base, gate)
