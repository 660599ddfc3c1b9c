"""A streamed turn that runs to its end whether or not anyone still reads it.

Why: when the client of an SSE answer hangs up, Starlette stops iterating the response. If the
response itself drove the pipeline, generation would stop there and Persist would never run, so
a message accepted with 200 would be lost. Here the turn runs in a worker thread; the response
only relays the events it produces, and may stop at any time without touching the turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor, Future
from typing import Any, Literal

log = logging.getLogger(__name__)

EventKind = Literal["meta", "delta", "done", "error"]
StreamFn = Callable[[Callable[[Any], None]], Iterator[str]]  # (on_ready) -> answer deltas


class DetachedStream:
    """Run ``stream(on_ready)`` in ``executor``; ``events()`` relays meta, delta..., then done or error.

    ``whole``: the answer is relayed as one delta once complete, not piece by piece (the
    ``stream_extras`` feature shed under load): one hand-over to the event loop, one event encoded and
    written per turn instead of one per piece. The text, ``meta`` and ``done`` are the same.
    """

    def __init__(self, stream: StreamFn, executor: Executor, whole: bool = False) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[EventKind, Any]] = asyncio.Queue()  # bounded by the answer's length
        self.whole = whole
        ctx = contextvars.copy_context()  # the request's ids, for the turn's log lines and spans
        self.future: Future[None] = executor.submit(ctx.run, self._run, stream)

    def _run(self, stream: StreamFn) -> None:
        held: list[str] = []
        try:
            for delta in stream(lambda turn: self._put("meta", turn)):
                if self.whole:
                    held.append(delta)
                else:
                    self._put("delta", delta)
            if held:
                self._put("delta", "".join(held))
        except Exception as exc:
            self._put("error", exc)
            if not isinstance(exc, (LookupError, ValueError)):
                log.warning("chat_stream_failed", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
            return
        self._put("done", None)

    def _put(self, kind: EventKind, data: Any) -> None:
        # RuntimeError: the event loop has stopped (server shut down); nobody is listening, the turn goes on
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, data))

    async def events(self) -> AsyncIterator[tuple[EventKind, Any]]:
        while True:
            kind, data = await self._queue.get()
            yield kind, data
            if kind in ("done", "error"):
                return
