"""The HTTP side of fault injection: a ``latency`` fault delays requests, and the fault API itself is
exempt from every fault, so a drill can always see and roll back what it injected."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from ragvigil.ops.faults import exempt

FAULTS_PATH = "/api/v1/ops/faults"


class FaultScope:
    """Pure ASGI: nothing but an attribute read per request while no fault is active."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith(FAULTS_PATH):
            token = exempt.set(True)  # copied into the worker threads of this request (key check, audit)
            try:
                await self.app(scope, receive, send)
            finally:
                exempt.reset(token)
            return
        rt = getattr(scope["app"].state, "runtime", None) if "app" in scope else None
        fault = rt.faults.hit("latency") if rt is not None else None
        if fault is not None:
            await delay(fault.delay_s, fault.cleared.is_set)
        await self.app(scope, receive, send)


async def delay(seconds: float, cleared: Callable[[], bool], step_s: float = 0.05) -> None:
    """Wait ``seconds`` on the event loop, ending early once the fault is cleared (no thread per request)."""
    deadline = time.monotonic() + seconds
    while not cleared() and (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(step_s, left))
