"""One JSON object per log line, carrying the request's ids from context variables."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from ragvigil.ops import instrumentation
from ragvigil.ops.logfiles import file_handlers
from ragvigil.ops.logwriter import BatchingHandler, DeferredFlush
from ragvigil.ops.redaction import SAFE_EXTRAS, RedactingFilter, Redactor

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
session_id_var: ContextVar[str | None] = ContextVar("session_id", default=None)
user_id_var: ContextVar[str | None] = ContextVar("user_id", default=None)
# fields gathered during a request for its one access line (one line per request is half the cost of two)
access_fields_var: ContextVar[dict[str, object] | None] = ContextVar("access_fields", default=None)

_REDACTOR = Redactor()
_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


def attach_to_access_line(fields: dict[str, object]) -> bool:
    """Put ``fields`` on the current request's access line; False outside a request (log them yourself)."""
    pending = access_fields_var.get()
    if pending is None:
        return False
    pending.update(fields)
    return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        cached = record.__dict__.get("_json")
        if cached is not None:  # stdout and the log files share one rendering of a record
            return cached
        record._json = self._render(record)  # type: ignore[attr-defined]
        return record._json  # type: ignore[attr-defined]

    def _render(self, record: logging.LogRecord) -> str:
        # ids captured where the record was made (``capture_context``), else read here
        request_id, session_id, user_id = record.__dict__.get("_ids") or _context_ids()
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
            "request_id": request_id,
            "session_id": session_id,
            "user_id": user_id,
        }
        for key in ("request_id", "session_id", "user_id"):  # each may come from the caller: an email, a key...
            if out[key] is not None:
                out[key] = _REDACTOR.redact_id(str(out[key]))
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def _context_ids() -> tuple[str | None, str | None, str | None]:
    return request_id_var.get(), session_id_var.get(), user_id_var.get()


def capture_context(record: logging.LogRecord) -> None:
    """Copy the request's ids onto a record that another thread will format (unless already there)."""
    if "_ids" not in record.__dict__:
        record._ids = _context_ids()  # type: ignore[attr-defined]


_ACCESS = logging.getLogger("ragvigil.access")
_WRITER: BatchingHandler | None = None  # the log writer configure_logging installed, if any


def log_access(fields: dict[str, object]) -> None:
    """The request's access line (event ``http_request``): made and written by the log writer when there is one."""
    if fields.keys() <= SAFE_EXTRAS:  # route, status, timings...: nothing the redaction filter would change
        fields["_redacted"] = True
    writer = _WRITER
    if writer is None:
        _ACCESS.info("http_request", extra=fields)
    elif _ACCESS.isEnabledFor(logging.INFO):
        writer.defer(_ACCESS, logging.INFO, "http_request", fields, _context_ids())


class _StreamHandler(DeferredFlush, logging.StreamHandler):  # type: ignore[type-arg]
    """stdout; flushed once per batch by the log writer."""


def configure_logging(
    level: str,
    log_dir: Path | None,
    json_lines: bool = True,
    stream: TextIO | None = None,
    flush_interval: float = 0.0,
) -> None:
    """Log to ``stream`` (stdout) and, when ``log_dir`` is given, to rotated files there; PII is redacted first.

    ``flush_interval`` > 0: a writer thread writes the lines in batches at most that many seconds late
    (ERROR and above at once), so requests never wait on a file write (``ragvigil.ops.logwriter``);
    0 writes each line in the thread that logs it (the CLI, tests).
    """
    reset_logging()
    # No caller file/line, process or thread names on records: the lines do not show them, and
    # finding them costs every log call (the logging HOWTO's "Optimization" section).
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logProcesses = False
    logging.logMultiprocessing = False
    formatter: logging.Formatter = (
        JsonFormatter() if json_lines else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    handlers: list[logging.Handler] = [_StreamHandler(stream or sys.stdout)]
    if log_dir is not None:
        handlers.extend(file_handlers(log_dir, formatter))  # application.log (INFO+), error.log (ERROR+)
    redacting = RedactingFilter(Redactor())
    for h in handlers:
        h.setFormatter(formatter)
        # on each handler: a logger's own filters do not see records propagated from child loggers
        h.addFilter(redacting)
    global _WRITER
    if flush_interval > 0:
        # the writer also applies the request path's queued metrics and spans (ops.instrumentation)
        _WRITER = BatchingHandler(handlers, flush_interval, prepare=capture_context, before_flush=instrumentation.drain)
        handlers = [_WRITER]
        instrumentation.defer_to_writer(True)
    root = logging.getLogger()
    for h in handlers:
        h._ragvigil = True  # type: ignore[attr-defined]
        root.addHandler(h)
    root.setLevel(level)
    for noisy in ("jieba", "httpx", "httpcore", "alembic", "multipart", "faiss", "bm25s"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True  # the request middleware logs requests


def reset_logging() -> None:
    """Remove the handlers ``configure_logging`` installed, writing out what they still hold."""
    global _WRITER
    _WRITER = None
    instrumentation.defer_to_writer(False)  # nobody drains the queue any more: apply it, then run inline
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_ragvigil", False)]
    for h in ours:
        if isinstance(h, BatchingHandler):
            h.flush()  # while still attached: deferred records pass through the logger to this handler
    for h in ours:
        root.removeHandler(h)
        h.close()
