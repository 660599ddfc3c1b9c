"""A small TCP proxy on 127.0.0.1 whose connections a test can stall, reset or slow (Toxiproxy's toxics).

Why: a provider that hangs, drops connections or drips bytes is the fault a breaker exists for, and a
real socket is the only honest way to produce it: ragvigil's real httpx client talks to the proxy,
the proxy to a real upstream. The toxic applies to connections accepted after it is set and to the
bytes still to flow on open ones.

* ``none``    pass bytes both ways.
* ``timeout`` accept, read and send nothing back until the toxic is removed (a hung endpoint).
* ``reset``   accept, then close with RST at once (``SO_LINGER`` 0): ``connection reset by peer``.
* ``latency`` hold every chunk from upstream ``latency_s`` before passing it on.
* ``down``    close every open connection and refuse new ones (the listening socket is closed).
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Literal

Toxic = Literal["none", "timeout", "reset", "latency", "down"]


@dataclass
class Proxy:
    upstream: tuple[str, int]
    toxic: Toxic = "none"
    latency_s: float = 0.0
    connections: int = 0  # accepted so far
    port: int = 0
    _changed: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _listener: socket.socket | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _open: set[socket.socket] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, toxic: Toxic, latency_s: float = 0.0) -> None:
        with self._lock:
            self.toxic, self.latency_s = toxic, latency_s
            if toxic == "down":
                self._close_listener()
                for conn in list(self._open):
                    with suppress(OSError):
                        conn.shutdown(socket.SHUT_RDWR)
                    conn.close()
                self._open.clear()
            elif self._listener is None and not self._stop.is_set():
                self._listen()
            self._changed.set()
            self._changed = threading.Event()

    # --- inside -------------------------------------------------------------------------------
    def _listen(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.port = s.getsockname()[1]
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True, name="toxic-accept").start()

    def _close_listener(self) -> None:
        if self._listener is not None:
            with suppress(OSError):  # wakes the thread blocked in accept(); close() alone does not on Linux
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed: toxic "down" or stopped
            self.connections += 1
            with self._lock:
                self._open.add(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True, name="toxic-conn").start()

    def _serve(self, client: socket.socket) -> None:
        toxic = self.toxic
        if toxic == "reset":
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            return
        if toxic == "timeout":
            self._stall(client)
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._open.add(upstream)
        threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
        self._pipe(upstream, client, True)

    def _stall(self, client: socket.socket) -> None:
        """Swallow what the client sends; answer nothing until the toxic changes or the proxy stops."""
        client.settimeout(0.2)
        while not self._stop.is_set() and self.toxic == "timeout":
            try:
                if not client.recv(65536):
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        client.close()

    def _pipe(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        try:
            while not self._stop.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if downstream and self.toxic == "latency" and self.latency_s:
                    self._stop.wait(self.latency_s)
                if downstream and self.toxic == "timeout":
                    self._stall(dst)
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
                with self._lock:
                    self._open.discard(s)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._close_listener()


@contextmanager
def toxic_proxy(upstream_url: str, toxic: Toxic = "none") -> Iterator[Proxy]:
    """A proxy in front of ``upstream_url`` (``http://127.0.0.1:PORT/...``); ``proxy.url`` + the path to use."""
    hostport = upstream_url.split("://", 1)[1].split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    proxy = Proxy((host, int(port)))
    with proxy._lock:
        proxy._listen()
    proxy.set(toxic)
    try:
        yield proxy
    finally:
        proxy.close()
