"""Open-loop requests from one thread: asyncio and h11 (httpx's own HTTP/1.1 engine) over kept-alive connections.

Why not the thread pool of ``traffic.open_loop`` for a burst: at hundreds of requests a second, httpx
on 256 threads cost the generator about half a core of a 2-core machine (``burst-10x`` journals
it), CPU the instance under test then lacked, so the burst measured the generator as much as the
instance. One event loop that writes each request and parses each answer with h11 costs a fraction
of that. Plain ``http://`` only (a drill's traffic stays on loopback); every request has a timeout.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit

import h11

from ragvigil.ops.drills.client import TurnOutcome, answered, chat_body, unanswered
from ragvigil.ops.open_files import raise_open_files_limit

MAX_BODY = 1 << 20  # an answer larger than this is not read (a chat answer is a few KB)
MAX_CONNECTIONS = 4096  # a 10x burst of ~120 answers/s with 1.5 s waits holds ~2,000 at once
FD_RESERVE = 128  # descriptors left for everything else the generator's process holds


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.http = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        self.writer.close()


class ChatLoad:
    """POST /api/v1/chat as ``InstanceClient.chat`` does, over at most ``max_connections`` connections."""

    def __init__(
        self, url: str, authorization: str | None, timeout_s: float, max_connections: int | None = None
    ) -> None:
        """``max_connections``: by default as many as the open-files limit leaves room for, up to
        ``MAX_CONNECTIONS``: a burst's users each have a connection of their own; with fewer, requests
        wait here for one, and the drill measures the generator's queue instead of the instance's."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("the load generator speaks plain http:// only")
        self.host, self.port = parts.hostname, parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.authorization = authorization
        self.timeout_s = timeout_s
        self._idle: list[_Conn] = []
        if max_connections is None:
            max_connections = max(1, min(MAX_CONNECTIONS, raise_open_files_limit() - FD_RESERVE))
        self.max_connections = max_connections
        self._slots = asyncio.Semaphore(max_connections)

    async def chat(self, message: str, session_id: str | None, user_id: str | None) -> TurnOutcome:
        body = chat_body(message, session_id, user_id)
        start = time.monotonic()
        async with self._slots:
            try:
                status, headers, raw = await asyncio.wait_for(self._post("/api/v1/chat", body), self.timeout_s)
            except (OSError, h11.ProtocolError, TimeoutError, asyncio.IncompleteReadError) as exc:
                return unanswered(start, session_id, exc)
        return answered(start, status, b"retry-after" in headers, raw, session_id)

    async def _post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[bytes, bytes], bytes]:
        payload = json.dumps(body).encode()
        if self._idle:  # a kept-alive connection the server may have closed meanwhile: then once on a new one
            conn = self._idle.pop()
            try:
                result = await self._exchange(conn, path, payload)
            except (OSError, h11.ProtocolError, asyncio.IncompleteReadError):
                conn.close()
            else:
                if result[0]:
                    return self._keep(conn, result)
                conn.close()
        conn = _Conn(*await asyncio.open_connection(self.host, self.port))
        try:
            result = await self._exchange(conn, path, payload)
        except BaseException:
            conn.close()
            raise
        return self._keep(conn, result)

    def _keep(
        self, conn: _Conn, result: tuple[int, dict[bytes, bytes], bytes]
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        if conn.http.our_state is h11.DONE and conn.http.their_state is h11.DONE:
            conn.http.start_next_cycle()
            self._idle.append(conn)
        else:
            conn.close()
        return result

    async def _exchange(self, conn: _Conn, path: str, payload: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        headers = [
            ("host", f"{self.host}:{self.port}"),
            ("content-type", "application/json"),
            ("content-length", str(len(payload))),
        ]
        if self.authorization:
            headers.append(("authorization", self.authorization))
        http = conn.http
        conn.writer.write(
            http.send(h11.Request(method="POST", target=self.prefix + path, headers=headers))
            + http.send(h11.Data(data=payload))
            + http.send(h11.EndOfMessage())
        )
        await conn.writer.drain()
        status, got, chunks, size = 0, {}, [], 0
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                data = await conn.reader.read(65536)
                http.receive_data(data)  # b"" is the end of the stream: h11 then raises or ends the message
                continue
            if isinstance(event, h11.Response):
                status, got = event.status_code, {k.lower(): v for k, v in event.headers}
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY:
                    raise h11.LocalProtocolError("answer too large")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return status, got, b"".join(chunks)

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
