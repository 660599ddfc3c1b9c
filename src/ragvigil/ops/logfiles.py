"""Log files on disk: size-rotated and gzipped, with rotated files trimmed line by line by level-based retention.

Two files, because errors are read long after the chatter around them is worth keeping:
``application.log`` gets INFO and above, ``error.log`` gets ERROR and above. On rollover the old file
is gzipped to ``application.log.1.gz`` (older ones shift to ``.2.gz``…). ``backup_count`` caps disk use;
the ``RetentionPolicy`` caps age per level — rotated files hold lines of mixed levels and ages, so
``enforce_retention`` rewrites them keeping only the lines still within their level's retention.

Wiring, inside ``configure_logging`` (replacing its single RotatingFileHandler)::

    from ragvigil.ops.logfiles import file_handlers

    if log_dir is not None:
        handlers.extend(file_handlers(log_dir, formatter))

and periodically (e.g. daily from the scheduler or at start-up)::

    from ragvigil.ops.logfiles import RetentionPolicy, enforce_retention

    report = enforce_retention(log_dir, RetentionPolicy())

Retention reads JSON lines (``JsonFormatter`` output: ``"ts"`` ISO-8601, ``"level"``); a timestamp without
an offset is taken as UTC. Lines it cannot read (not JSON, no usable ``ts``/``level``) are *kept* and
counted as corrupt: a line that can't be dated can't be shown to be expired, and deleting evidence is the
worse mistake. Bytes that aren't UTF-8 are written back as they were; blank lines are dropped. A ``.gz``
that can't be decompressed is left untouched and listed in the report. The live ``application.log``/``error.log`` are never touched.
Run it from one process at a time, ideally the one that owns the handlers: a rollover that happens while a
rotated file is being rewritten can lose that file's retained lines.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import shutil
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from logging.handlers import RotatingFileHandler
from pathlib import Path

from ragvigil.ops.logwriter import DeferredFlush

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "ERROR_LOG",
    "MAIN_LOG",
    "RetentionPolicy",
    "RetentionReport",
    "enforce_retention",
    "file_handlers",
]

MAIN_LOG = "application.log"
ERROR_LOG = "error.log"
DEFAULT_RETENTION_DAYS: Mapping[str, int | None] = {
    "DEBUG": 7,
    "INFO": 30,
    "WARNING": 60,
    "ERROR": 90,
    "CRITICAL": None,
}


def _gz_name(default_name: str) -> str:
    return default_name + ".gz"


def _gzip_rotator(source: str, dest: str) -> None:
    """Compress the file just rolled over; via a temp name so a crash never leaves a truncated ``.gz``."""
    partial = dest + ".part"
    with open(source, "rb") as src, gzip.open(partial, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.replace(partial, dest)
    os.remove(source)


class _CountingRotatingFileHandler(DeferredFlush, RotatingFileHandler):
    """Rolls over by the bytes it wrote instead of asking the file system before every record.

    The stock ``shouldRollover`` stats the path twice and seeks the stream per record (three syscalls
    on every log line); the file size is known here, so the check is a comparison. Another process
    appending to the same file makes the rollover a little late, never lost.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._written: int | None = None  # bytes in the current file, known after the first record
        self._pending = 0

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        if self.maxBytes <= 0:
            return False
        if self.stream is None:
            self.stream = self._open()
        if self._written is None:
            self._written = self.stream.seek(0, 2)
        line = self.format(record)
        size = (len(line) if line.isascii() else len(line.encode("utf-8"))) + len(self.terminator)
        self._pending = size
        return self._written > 0 and self._written + size >= self.maxBytes

    def doRollover(self) -> None:
        super().doRollover()
        self._written = 0

    def emit(self, record: logging.LogRecord) -> None:
        self._pending = 0
        super().emit(record)
        if self._written is not None:
            self._written += self._pending


def _rotating_gz_handler(path: Path, level: int, max_bytes: int, backup_count: int) -> RotatingFileHandler:
    handler = _CountingRotatingFileHandler(path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8")
    handler.setLevel(level)
    handler.namer = _gz_name
    handler.rotator = _gzip_rotator
    return handler


def file_handlers(
    log_dir: Path,
    formatter: logging.Formatter,
    max_bytes: int = 20_000_000,
    backup_count: int = 20,
) -> list[logging.Handler]:
    """``application.log`` (INFO+) and ``error.log`` (ERROR+) in ``log_dir``, size-rotated into ``.N.gz`` files."""
    log_dir.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [
        _rotating_gz_handler(log_dir / MAIN_LOG, logging.INFO, max_bytes, backup_count),
        _rotating_gz_handler(log_dir / ERROR_LOG, logging.ERROR, max_bytes, backup_count),
    ]
    for h in handlers:
        h.setFormatter(formatter)
    return handlers


@dataclass(frozen=True)
class RetentionPolicy:
    """Days to keep a line, by level name; ``None`` keeps it forever.

    Levels not in ``days`` (custom levels) use ``other_days``, by default forever.
    """

    days: Mapping[str, int | None] = field(default_factory=lambda: dict(DEFAULT_RETENTION_DAYS))
    other_days: int | None = None

    def max_age(self, level: str) -> timedelta | None:
        days = self.days.get(level.upper(), self.other_days)
        return None if days is None else timedelta(days=days)


@dataclass
class RetentionReport:
    """What one ``enforce_retention`` pass did."""

    files_scanned: int = 0
    files_rewritten: list[Path] = field(default_factory=list)
    files_deleted: list[Path] = field(default_factory=list)
    unreadable_files: list[Path] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    kept_lines: int = 0
    corrupt_lines: int = 0

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


def _rotated_files(log_dir: Path, base_names: Iterable[str]) -> list[Path]:
    """``<base>.<n>`` and ``<base>.<n>.gz`` only: never the live file, temp files or anything else."""
    pattern = re.compile(rf"(?:{'|'.join(re.escape(b) for b in base_names)})\.[0-9]+(?:\.gz)?")
    return sorted(p for p in log_dir.iterdir() if p.is_file() and pattern.fullmatch(p.name))


def _read_lines(path: Path) -> list[str]:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    # surrogateescape: bytes that aren't UTF-8 survive the read/write round trip unchanged;
    # split on "\n" only, since str.splitlines() would also break inside a line at U+2028 and friends
    text = data.decode("utf-8", errors="surrogateescape")
    return [line for line in text.split("\n") if line.strip()]


def _line_time_level(line: str) -> tuple[datetime, str] | None:
    try:
        obj = json.loads(line)
        ts, level = obj["ts"], obj["level"]
        if not isinstance(ts, str) or not isinstance(level, str):
            return None
        when = datetime.fromisoformat(ts)
    except (ValueError, KeyError, TypeError):  # JSONDecodeError is a ValueError
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)), level.upper()


def _split_expired(lines: list[str], policy: RetentionPolicy, now: datetime) -> tuple[list[str], Counter[str], int]:
    """(lines to keep, expired lines per level, unreadable lines); unreadable lines are among those kept."""
    kept: list[str] = []
    dropped: Counter[str] = Counter()
    corrupt = 0
    for line in lines:
        parsed = _line_time_level(line)
        if parsed is None:
            corrupt += 1
            kept.append(line)
            continue
        when, level = parsed
        max_age = policy.max_age(level)
        if max_age is not None and when < now - max_age:
            dropped[level] += 1
        else:
            kept.append(line)
    return kept, dropped, corrupt


def _write_atomically(path: Path, lines: list[str]) -> None:
    data = "".join(line + "\n" for line in lines).encode("utf-8", errors="surrogateescape")
    if path.suffix == ".gz":
        data = gzip.compress(data)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        shutil.copymode(path, tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def enforce_retention(
    log_dir: Path,
    policy: RetentionPolicy | None = None,
    now: datetime | None = None,
    base_names: Iterable[str] = (MAIN_LOG, ERROR_LOG),
) -> RetentionReport:
    """Drop expired lines from the rotated files of ``base_names`` in ``log_dir``; delete files left empty.

    ``now`` (default: the current UTC time; naive means UTC) lets callers and tests fix the clock.
    """
    policy = policy or RetentionPolicy()
    now = now or datetime.now(UTC)
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    report = RetentionReport()
    if not log_dir.is_dir():
        return report
    for path in _rotated_files(log_dir, tuple(base_names)):
        report.files_scanned += 1
        try:
            lines = _read_lines(path)
        except (OSError, EOFError, zlib.error):  # gzip.BadGzipFile is an OSError
            report.unreadable_files.append(path)
            continue
        kept, dropped, corrupt = _split_expired(lines, policy, now)
        report.corrupt_lines += corrupt
        report.kept_lines += len(kept)
        if not dropped:
            continue
        report.dropped.update(dropped)
        if kept:
            _write_atomically(path, kept)
            report.files_rewritten.append(path)
        else:
            path.unlink()
            report.files_deleted.append(path)
    return report
