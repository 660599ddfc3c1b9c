"""One JSON object per log line, carrying the request's ids from context variables."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from ragvigil.ops.logfiles import file_handlers
from ragvigil.ops.redaction import RedactingFilter, Redactor

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
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
            "request_id": request_id_var.get(),
            "session_id": session_id_var.get(),
            "user_id": user_id_var.get(),
        }
        if out["user_id"] is not None:
            out["user_id"] = _REDACTOR.redact(str(out["user_id"]))  # a user id may be an email or a phone
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: str, log_dir: Path | None, json_lines: bool = True, stream: TextIO | None = None) -> None:
    """Log to ``stream`` (stdout) and, when ``log_dir`` is given, to rotated files there; PII is redacted first."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_ragvigil", False):
            root.removeHandler(h)
            h.close()
    formatter: logging.Formatter = (
        JsonFormatter() if json_lines else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stdout)]
    if log_dir is not None:
        handlers.extend(file_handlers(log_dir, formatter))  # application.log (INFO+), error.log (ERROR+)
    redacting = RedactingFilter(Redactor())
    for h in handlers:
        h.setFormatter(formatter)
        # on each handler: a logger's own filters do not see records propagated from child loggers
        h.addFilter(redacting)
        h._ragvigil = True  # type: ignore[attr-defined]
        root.addHandler(h)
    root.setLevel(level)
    for noisy in ("jieba", "httpx", "httpcore", "alembic", "multipart", "faiss", "bm25s"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True  # the request middleware logs requests
