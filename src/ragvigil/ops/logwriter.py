"""Log records written in batches by one thread, so a request never waits on a file write.

Why: the service writes a line per request to stdout and to ``application.log``. Written by the
request's own thread that was two ``write()`` calls per request, each releasing and retaking the GIL
while the worker threads wanted it; in a running server that measured ~100 µs of a ~6 ms cached chat
turn, a third of what observability cost in all (``bench/overhead.py``). Here a logging call only
appends the record to a deque; a writer thread hands what is queued to the real handlers every
``interval`` seconds, and each handler's stream is flushed once per batch.

A record at ``flush_level`` (ERROR) or above is written at once by the thread that logged it,
after everything queued before it: an error is on disk before the code goes on, and lines keep
their order. A crash loses at most the last ``interval`` of INFO/WARNING lines; ``close`` (called by
``logging.shutdown`` at exit) writes the rest.

``defer`` goes one step further for the line every request writes: the caller hands over the
fields and the writer thread makes the ``LogRecord`` (stamped with the time of the call) and passes
it through the logger like any other record. Building a record through ``Logger.info`` measured
~1.5 % of a cached chat turn on the event loop thread, which does most of a turn's work.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["BatchingHandler", "DeferredFlush"]


class DeferredFlush:
    """Mixin for a stream handler: its per-record flush is held back while a batch is written."""

    _holding = False

    def flush(self) -> None:
        if not self._holding:
            super().flush()  # type: ignore[misc]


class BatchingHandler(logging.Handler):
    """Queues records and passes them to ``targets`` from a writer thread, in batches.

    ``prepare`` runs in the logging thread before a record is queued: whatever the formatters read
    from the calling context (context variables) must be copied onto the record there.
    """

    def __init__(
        self,
        targets: Sequence[logging.Handler],
        interval: float = 0.2,
        prepare: Callable[[logging.LogRecord], None] | None = None,
        flush_level: int = logging.ERROR,
        max_pending: int = 10_000,
        before_flush: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(min((t.level for t in targets), default=logging.NOTSET))
        self.targets = list(targets)
        self.interval = interval
        self.prepare = prepare
        self.before_flush = before_flush  # more batched work for the writer thread, run before each flush
        self.flush_level = flush_level
        self.max_pending = max_pending  # beyond this the logging thread writes: memory stays bounded
        self._pending: deque[logging.LogRecord] = deque()
        self._deferred: deque[tuple[logging.Logger, int, str, float, Mapping[str, Any], Any]] = deque()
        self._write_lock = threading.RLock()  # RLock: a handler that logs while writing must not deadlock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ragvigil-log-writer", daemon=True)
        self._thread.start()

    def handle(self, record: logging.LogRecord) -> bool | logging.LogRecord:
        """Like ``Handler.handle`` without the handler lock: appending to a deque is thread-safe."""
        passed = self.filter(record)
        if passed:
            self.emit(record)
        return passed

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.args:  # format now: the arguments may change before the writer gets to them
                record.msg = record.getMessage()
                record.args = None
            if self.prepare is not None:
                self.prepare(record)
        except Exception:
            self.handleError(record)
            return
        self._pending.append(record)
        if record.levelno >= self.flush_level or len(self._pending) >= self.max_pending:
            try:
                self.flush()
            except Exception:  # a logging call never raises into the code that logged
                self.handleError(record)

    def defer(self, logger: logging.Logger, level: int, msg: str, fields: Mapping[str, Any], context: Any) -> None:
        """Log ``msg`` with ``fields`` as extras from the writer thread, dated now.

        ``context`` is what ``prepare`` would have copied from the calling thread (it is stored on the
        record as ``_ids``); the fields must not change after the call.
        """
        self._deferred.append((logger, level, msg, time.time(), fields, context))

    def flush(self) -> None:
        """Write everything queued so far, in time order, then flush each target once."""
        if self.before_flush is not None:
            try:
                self.before_flush()
            except Exception:  # the queued lines are still written
                traceback.print_exc(file=sys.stderr)
        with self._write_lock:
            deferred = self._deferred
            while deferred:
                self._make_record(*deferred.popleft())
            batch: list[logging.LogRecord] = []
            pending = self._pending
            while pending:
                batch.append(pending.popleft())
            if batch:
                batch.sort(key=_created)  # deferred records join the queue late; their lines keep their time
                for target in self.targets:
                    _write_batch(target, batch)

    @staticmethod
    def _make_record(
        logger: logging.Logger, level: int, msg: str, created: float, fields: Mapping[str, Any], context: Any
    ) -> None:
        record = logger.makeRecord(logger.name, level, "(unknown file)", 0, msg, None, None, extra=fields)
        record.created = created
        record.msecs = int((created - int(created)) * 1000) + 0.0
        record.relativeCreated = (created - logging._startTime) * 1000  # type: ignore[attr-defined]
        record.thread = record.threadName = None  # made here, not by the thread that logged
        record._ids = context  # type: ignore[attr-defined]
        logger.handle(record)  # every handler sees it, this one queues it again (see flush)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self.flush()
        for target in self.targets:
            target.close()
        super().close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception:  # the writer must outlive one bad batch; say so where logging cannot
                traceback.print_exc(file=sys.stderr)


def _created(record: logging.LogRecord) -> float:
    return record.created


def _write_batch(target: logging.Handler, batch: list[logging.LogRecord]) -> None:
    holding = isinstance(target, DeferredFlush)
    if holding:
        target._holding = True  # type: ignore[attr-defined]
    try:
        level = target.level
        for record in batch:
            if record.levelno >= level:
                target.handle(record)  # filters (redaction) and emit; errors go to handleError
    finally:
        if holding:
            target._holding = False  # type: ignore[attr-defined]
    try:
        target.flush()
    except (OSError, ValueError):  # a closed or failing stream must not stop the other targets
        traceback.print_exc(file=sys.stderr)
