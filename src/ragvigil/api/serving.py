"""A bounded, visible shutdown: drain on the first SIGTERM, stop within the grace period, stop now on the second.

Why: plain uvicorn closes its listener at the first SIGTERM (a load balancer probing readiness sees
refused connections, not 503), then waits for open connections with no limit, and ignores a second
SIGTERM: a long request kept the process alive until SIGKILL. Here the first signal marks the
runtime draining (``/health/ready`` answers 503 at once, new work is refused with 503) while the
listener stays open; once nothing is in flight, or the grace period is over, uvicorn's own shutdown
runs with what is left of the grace, and the lifespan journals the turns it could not wait for.

The drain lasts at least ``linger_s`` (1 s by default) even when nothing is in flight. A proxy keeps
idle keep-alive connections to each instance; closed straight after the last turn, one of them can be
closed under a request the proxy is sending, and nginx answers that POST 502 and never retries it
(3 of 414 requests in a rolling restart behind nginx). While lingering, every new request gets the
draining 503 with ``Connection: close``: the proxy reads it, drops that connection and retries
elsewhere, so the pooled connections are used up before the instance closes the rest.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

from ragvigil.api.errors import error_body

log = logging.getLogger(__name__)

# what answers while draining: the probes (so the load balancer sees 503 on readiness) and the metrics
_OPEN_WHILE_DRAINING = ("/health", "/metrics")


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain phase before its shutdown, bounded by ``grace_s``."""

    def __init__(
        self,
        config: uvicorn.Config,
        grace_s: float,
        runtime: Callable[[], Any],
        on_stopped: Callable[[], None] | None = None,
        linger_s: float = 0.0,
    ) -> None:
        """``linger_s``: the drain lasts at least this long (within ``grace_s``), even with nothing in flight."""
        config.timeout_graceful_shutdown = grace_s  # type: ignore[assignment]  # narrowed when the drain ends
        super().__init__(config)
        self.grace_s = grace_s
        self.runtime = runtime  # the app's Runtime once started (None before)
        self.on_stopped = on_stopped  # e.g. write out queued log lines: uvicorn then re-raises the signal
        self.linger_s = min(linger_s, grace_s)
        self.drain_started: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._captured_signals.append(sig)  # uvicorn re-raises it when done: the exit status stays "by signal"
        rt = self.runtime()
        if self.drain_started is None and self.started:
            self.drain_started = time.monotonic()
            if rt is not None:
                rt.draining = True  # readiness turns 503 now, not after the connections have closed
            log.warning("shutdown_draining", extra={"signal": signal.Signals(sig).name, "grace_s": self.grace_s})
            return
        # a second signal (or one before start-up finished): stop now, keeping only what is quick to keep
        log.warning("shutdown_forced", extra={"signal": signal.Signals(sig).name})
        if rt is not None:
            try:
                rt.keep_unfinished_turns()
            except Exception:
                log.exception("shutdown_keep_turns_failed")
        self.config.timeout_graceful_shutdown = 0  # cancel what still runs, without waiting
        self.should_exit = True
        self.force_exit = True

    def busy(self) -> bool:
        """Requests being served or turns still running (a streamed turn outlives its hung-up client)."""
        rt = self.runtime()
        return bool(self.server_state.tasks) or bool(rt is not None and rt.pipeline.in_flight())

    async def on_tick(self, counter: int) -> bool:
        rt = self.runtime()
        if self.drain_started is None and self.started and getattr(rt, "restart_requested", None):
            # a requested restart (remediation): the same clean drain as SIGTERM, then a non-zero exit
            self.drain_started = time.monotonic()
            rt.draining = True  # type: ignore[union-attr]
            log.warning("shutdown_draining", extra={"reason": rt.restart_requested, "grace_s": self.grace_s})  # type: ignore[union-attr]
        if self.drain_started is not None and not self.should_exit:
            elapsed = time.monotonic() - self.drain_started
            if elapsed >= self.grace_s or (elapsed >= self.linger_s and not self.busy()):
                # uvicorn waits for the rest (then cancels it) with what is left of the grace period
                self.config.timeout_graceful_shutdown = max(self.grace_s - elapsed, 0.0)  # type: ignore[assignment]
                log.info("shutdown_drained", extra={"waited_s": round(elapsed, 2), "busy": self.busy()})
                self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: Any = None) -> None:
        await super().shutdown(sockets)
        if self.on_stopped is not None:
            self.on_stopped()
        if self._captured_signals and self.busy():
            # What still runs is journaled, and the log is written. Left alone, interpreter exit would
            # wait for those threads (a turn blocked on its generator), unbounded: leave now instead,
            # with the status a death by that signal gives.
            os._exit(128 + self._captured_signals[-1])


class DrainGate:
    """ASGI middleware: while the runtime drains, new requests other than probes get 503 and ``Retry-After``.

    New work would only prolong the drain, or be cut off by it; the client retries on another instance.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not _draining(scope) or scope["path"].startswith(_OPEN_WHILE_DRAINING):
            await self.app(scope, receive, send)
            return
        body = json.dumps(error_body("draining", "this instance is shutting down; retry shortly")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", b"1"),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _draining(scope: dict) -> bool:
    rt = getattr(getattr(scope.get("app"), "state", None), "runtime", None)
    return bool(getattr(rt, "draining", False))
