"""Read the JSON log files back for ``ragvigil logs …``: errors, levels, latency and one session's story.

Everything here is a pure function over the files written by ``ragvigil.ops.logfiles`` (``application.log``
with INFO+, ``error.log`` with ERROR+, both rotated to ``<name>.N.gz``) in ``JsonFormatter``'s format; the
CLI only parses options and prints. Typical use::

    stats = ReadStats()
    records = list(iter_records(settings.log_dir, since=parse_when("2h"), stats=stats))
    kinds = error_summary(records)
    rows = latency_summary(records, by="route")

Reading rules (see ``iter_records``):

* Files are read oldest first (highest rotation number first, the live file last) and the per-file streams
  are merged by timestamp, so the output is in time order as long as each file is.
* An ERROR line is written to both files, so lines above WARNING that are byte-identical in both are shown
  once. Identical lines are counted per file and the larger count wins, so an error genuinely logged twice
  in the same millisecond still shows twice; ``error.log`` keeps errors longer than ``application.log``
  keeps its chatter, so errors whose copy has rotated away are still shown (once).
* A line is *corrupt* when it isn't a JSON object with string ``ts`` (ISO-8601) and ``level``: it is
  skipped and counted, never fatal. A ``.gz`` that cannot be read to the end keeps the lines read before the
  damage and is listed in ``ReadStats.unreadable_files``.
* A ``ts`` without an offset is taken as UTC, as ``enforce_retention`` does.

Each call reads every file: cost grows with the total log size, not with the ``since``/``until`` window.
A rollover during a read can shift file names under the reader, so a line may rarely be missed or repeated.
"""

from __future__ import annotations

import dataclasses
import gzip
import heapq
import json
import logging
import math
import re
import zlib
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from ragvigil.ops.logfiles import ERROR_LOG, MAIN_LOG
from ragvigil.ops.redaction import Redactor

__all__ = [
    "LOG_FILES",
    "ErrorKind",
    "LatencyRow",
    "ReadStats",
    "Record",
    "error_summary",
    "exception_line",
    "iter_records",
    "latency_summary",
    "level_counts",
    "parse_when",
    "record_time",
    "timeline",
    "to_json",
]

Record = dict[str, Any]

LOG_FILES: tuple[str, ...] = (MAIN_LOG, ERROR_LOG)
_DEDUP_WINDOW = timedelta(minutes=10)  # how far apart (in log time) two copies of one line may be read
_SINGLE_FILE_LEVELS = frozenset({"DEBUG", "INFO", "WARNING"})  # never written to error.log, so never copied
_LEVEL_ORDER = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_EXAMPLE_CHARS = 500
_REDACTOR = Redactor()  # the one JsonFormatter applies to user ids


# ---------------------------------------------------------------- reading


@dataclass
class ReadStats:
    """What ``iter_records`` saw; complete once its iterator is exhausted."""

    files_read: list[Path] = field(default_factory=list)
    unreadable_files: list[Path] = field(default_factory=list)  # missing, not gzip, or cut short
    lines_read: int = 0  # non-blank lines, corrupt ones included
    corrupt_lines: int = 0
    duplicate_lines: int = 0  # ERROR+ copies dropped because the other file holds the same line


class _Entry(NamedTuple):
    when: datetime
    source: int  # index into the ``files`` names
    raw: bytes
    record: Record


def iter_records(
    log_dir: Path,
    since: datetime | None = None,
    until: datetime | None = None,
    files: Iterable[str] = LOG_FILES,
    stats: ReadStats | None = None,
) -> Iterator[Record]:
    """Log records with ``since <= ts < until``, oldest first, each ERROR line once; naive bounds mean UTC.

    Argument errors are raised here, at the call, not at the first ``next()``. Pass a ``ReadStats`` to learn
    how many lines were corrupt or duplicated and which files could not be read.
    """
    if not log_dir.is_dir():
        raise FileNotFoundError(f"no log directory at {log_dir}")
    since, until = _optional_utc(since), _optional_utc(until)
    if since is not None and until is not None and since > until:
        raise ValueError(f"since ({since.isoformat()}) is after until ({until.isoformat()})")
    names = tuple(files)
    stats = stats if stats is not None else ReadStats()
    streams = [_entries(_log_paths(log_dir, name), i, stats) for i, name in enumerate(names)]
    merged = heapq.merge(*streams, key=lambda e: e.when)
    return _dedupe(_in_window(merged, since, until), len(names), stats)


def _optional_utc(when: datetime | None) -> datetime | None:
    return None if when is None else _as_utc(when)


def _as_utc(when: datetime) -> datetime:
    """Aware and in UTC, so times from different offsets compare and print alike; naive means UTC."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _log_paths(log_dir: Path, name: str) -> list[Path]:
    """``name.N[.gz]`` from the highest N (oldest) down, then the live ``name``: the order lines were written."""
    pattern = re.compile(re.escape(name) + r"\.([0-9]+)(?:\.gz)?")
    rotated = [(int(m[1]), p) for p in log_dir.iterdir() if (m := pattern.fullmatch(p.name)) and p.is_file()]
    paths = [p for _, p in sorted(rotated, key=lambda item: (-item[0], item[1].name))]
    live = log_dir / name
    return [*paths, live] if live.is_file() else paths


def _entries(paths: list[Path], source: int, stats: ReadStats) -> Iterator[_Entry]:
    """Parsed lines of one log's files in order; blank lines are skipped, corrupt ones counted."""
    for path in paths:
        for line in _raw_lines(path, stats):
            raw = line.strip()
            if not raw:
                continue
            stats.lines_read += 1
            parsed = _parse(raw)
            if parsed is None:
                stats.corrupt_lines += 1
                continue
            yield _Entry(parsed[0], source, raw, parsed[1])


def _raw_lines(path: Path, stats: ReadStats) -> Iterator[bytes]:
    """Lines split on ``\\n`` only; a file that fails part-way keeps the lines read before the failure."""
    stats.files_read.append(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            yield from f
    except (OSError, EOFError, zlib.error):  # gone since listed, not gzip (BadGzipFile), truncated, bad data
        stats.unreadable_files.append(path)


def _parse(raw: bytes) -> tuple[datetime, Record] | None:
    """(UTC time, record) for a JSON object with string ``ts`` and ``level``; ``None`` for anything else."""
    try:
        obj = json.loads(raw.decode("utf-8", errors="replace"))  # a stray bad byte shouldn't hide the line
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("ts"), str) or not isinstance(obj.get("level"), str):
        return None
    try:
        when = datetime.fromisoformat(obj["ts"])
    except ValueError:
        return None
    return _as_utc(when), obj


def _in_window(entries: Iterable[_Entry], since: datetime | None, until: datetime | None) -> Iterator[_Entry]:
    for e in entries:
        if (since is None or e.when >= since) and (until is None or e.when < until):
            yield e


def _dedupe(entries: Iterable[_Entry], n_sources: int, stats: ReadStats) -> Iterator[Record]:
    """Show each line as many times as the file holding it most often does (ERROR lines are in both files).

    Only lines above WARNING are compared, and only within ``_DEDUP_WINDOW`` of log time, which keeps
    memory bounded by the error rate rather than the log size.
    """
    counts: dict[bytes, list[int]] = {}
    first_seen: deque[tuple[datetime, bytes]] = deque()
    for e in entries:
        while first_seen and first_seen[0][0] < e.when - _DEDUP_WINDOW:
            counts.pop(first_seen.popleft()[1], None)
        if n_sources > 1 and e.record["level"].upper() not in _SINGLE_FILE_LEVELS:
            seen = counts.get(e.raw)
            if seen is None:
                seen = counts[e.raw] = [0] * n_sources
                first_seen.append((e.when, e.raw))
            seen[e.source] += 1
            if seen[e.source] <= max(c for i, c in enumerate(seen) if i != e.source):
                stats.duplicate_lines += 1
                continue
        yield e.record


def record_time(record: Record) -> datetime:
    """The record's ``ts`` as an aware UTC datetime (naive means UTC)."""
    return _as_utc(datetime.fromisoformat(record["ts"]))


# ---------------------------------------------------------------- --since / --until

_RELATIVE = re.compile(r"([0-9]+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(value: str, now: datetime | None = None) -> datetime:
    """A ``--since``/``--until`` value: ISO-8601, ``now``, or an age before now (``15m``, ``2h``, ``7d``; s m h d w).

    ISO-8601 without an offset is read in ``now``'s time zone (pass ``datetime.now().astimezone()`` for the
    machine's local time); ``now`` defaults to the current UTC time, and a naive ``now`` means UTC.
    """
    now = now or datetime.now(UTC)
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    text = value.strip()
    if m := _RELATIVE.fullmatch(text):
        try:
            return now - timedelta(**{_UNITS[m[2]]: int(m[1])})
        except OverflowError:
            raise ValueError(f"{value!r} reaches further back than a date can go") from None
    if text.lower() == "now":
        return now
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"cannot read {value!r} as a time: use ISO-8601 (2026-06-01, 2026-06-01T12:00:00+08:00) "
            "or an age like 30s, 15m, 2h, 7d, 1w"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=now.tzinfo)


# ---------------------------------------------------------------- errors

_TRACEBACK_HEADERS = ("Traceback (most recent call last):", "  + Exception Group Traceback (most recent call last):")
_EXCEPTION_LINE = re.compile(r"([A-Za-z_][\w.]*)(?::\s|:$|$)")


@dataclass(frozen=True)
class ErrorKind:
    """One kind of error: the same event with the same final exception type (``None`` when none was logged)."""

    event: str
    exc_type: str | None
    count: int
    first_seen: datetime
    last_seen: datetime
    example: str  # of the latest occurrence: its exception line, else its "error" field, else the event
    example_request_id: str | None


def exception_line(exc: str) -> str | None:
    """The raised exception's ``Type: message`` line (its first line only) from a formatted traceback.

    Not simply the last line: messages span lines (pydantic), notes follow the exception line, and a chain
    prints the raised exception last. So: the first unindented line after the last top-level traceback
    header (an exception group's lines are prefixed ``"  | "``); the first unindented line when there is no
    header (an exception logged without being raised).
    """
    lines = exc.split("\n")
    start = 0
    for i, line in enumerate(lines):
        if line.rstrip() in _TRACEBACK_HEADERS:
            start = i + 1
    for line in lines[start:]:
        text = line[4:] if line.startswith("  | ") else line
        if text[:1].strip():
            return text.rstrip() if _EXCEPTION_LINE.match(text) else None
    return None


def _is_error(record: Record) -> bool:
    level = str(record.get("level", "")).upper()
    return logging.getLevelNamesMapping().get(level, logging.NOTSET) >= logging.ERROR


def _error_key(record: Record) -> tuple[str, str | None, str | None]:
    """(event, exception type, exception line) of one error record."""
    exc = record.get("exc")
    line = exception_line(exc) if isinstance(exc, str) else None
    exc_type = m[1] if line and (m := _EXCEPTION_LINE.match(line)) else None
    return str(record.get("event", "")), exc_type, line


def _example(record: Record, exc_line: str | None) -> str:
    error = record.get("error")
    text = exc_line or (error if isinstance(error, str) and error else None) or str(record.get("event", ""))
    return text[:_EXAMPLE_CHARS]


@dataclass
class _ErrorGroup:
    count: int
    first_seen: datetime
    last_seen: datetime
    example: str
    example_request_id: str | None

    def add(self, when: datetime, example: str, request_id: str | None) -> None:
        """Count one more; the latest occurrence supplies the example, as it is the one worth looking up."""
        self.count += 1
        self.first_seen = min(self.first_seen, when)
        if when >= self.last_seen:
            self.last_seen, self.example, self.example_request_id = when, example, request_id


def error_summary(records: Iterable[Record], top: int | None = None) -> list[ErrorKind]:
    """ERROR and CRITICAL records grouped by (event, exception type), most frequent first, then most recent.

    Grouping by type rather than message keeps "the same failure with different ids" together.
    """
    groups: dict[tuple[str, str | None], _ErrorGroup] = {}
    for record in records:
        if not _is_error(record):
            continue
        event, exc_type, line = _error_key(record)
        when, example, request_id = record_time(record), _example(record, line), record.get("request_id")
        if (group := groups.get((event, exc_type))) is None:
            groups[(event, exc_type)] = _ErrorGroup(1, when, when, example, request_id)
        else:
            group.add(when, example, request_id)
    kinds = [ErrorKind(event, exc_type, **dataclasses.asdict(g)) for (event, exc_type), g in groups.items()]
    kinds.sort(key=lambda k: (-k.count, -k.last_seen.timestamp(), k.event, k.exc_type or ""))
    return kinds if top is None else kinds[:top]


# ---------------------------------------------------------------- levels


def level_counts(records: Iterable[Record]) -> dict[str, int]:
    """Lines per level, standard levels in severity order, then any custom level by name; absent levels omitted."""
    counts = Counter(str(r.get("level", "")) for r in records)
    rank = {name: i for i, name in enumerate(_LEVEL_ORDER)}
    return {level: counts[level] for level in sorted(counts, key=lambda lv: (rank.get(lv, len(rank)), lv))}


# ---------------------------------------------------------------- latency


@dataclass(frozen=True)
class LatencyRow:
    """Latency of one route (``"METHOD /template"``) or pipeline stage, in milliseconds."""

    name: str
    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


def _latency_key(record: Record, by: Literal["route", "stage"]) -> str | None:
    """The row a record belongs to, or ``None`` when it is not a latency line of that kind."""
    if by == "route" and record.get("event") == "http_request" and isinstance(record.get("route"), str):
        method = record.get("method")
        return f"{method} {record['route']}" if isinstance(method, str) else record["route"]
    if by == "stage" and record.get("event") == "stage_done" and isinstance(record.get("stage"), str):
        return record["stage"]
    return None


def _milliseconds(record: Record) -> float | None:
    ms = record.get("ms")
    if isinstance(ms, int | float) and not isinstance(ms, bool) and math.isfinite(ms):
        return float(ms)
    return None


def latency_summary(records: Iterable[Record], by: Literal["route", "stage"] = "route") -> list[LatencyRow]:
    """p50/p95/p99 per route (``http_request`` lines) or per stage (``stages_ms`` / ``stage_done`` lines).

    Rows are sorted slowest p95 first.

    Percentiles are exact nearest-rank (numpy's ``inverted_cdf``): p95 is the smallest observed value with at
    least 95% of the values at or below it, so it is always a latency that really happened; no interpolation.
    Routes are keyed by method and template, since GET and DELETE of one path are different work. Lines
    without a finite numeric ``ms`` are ignored.
    """
    if by not in ("route", "stage"):
        raise ValueError(f"latency by {by!r}: expected 'route' or 'stage'")
    samples: defaultdict[str, list[float]] = defaultdict(list)
    for record in records:
        if by == "stage" and isinstance(record.get("stages_ms"), dict):
            # a chat request's access line (or a ``chat_turn`` line outside HTTP) carries every stage's
            # time; per-stage ``stage_done`` lines are DEBUG
            for stage, ms in record["stages_ms"].items():
                if isinstance(ms, int | float) and math.isfinite(ms):
                    samples[str(stage)].append(float(ms))
            continue
        key = _latency_key(record, by)
        ms = _milliseconds(record) if key is not None else None
        if key is not None and ms is not None:
            samples[key].append(ms)
    rows = [_latency_row(name, values) for name, values in samples.items()]
    rows.sort(key=lambda r: (-r.p95_ms, r.name))
    return rows


def _latency_row(name: str, values: list[float]) -> LatencyRow:
    p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99], method="inverted_cdf")
    return LatencyRow(name, len(values), float(p50), float(p95), float(p99), max(values))


# ---------------------------------------------------------------- timeline


def timeline(
    records: Iterable[Record],
    session_id: str | None = None,
    user_id: str | None = None,
    request_id: str | None = None,
) -> list[Record]:
    """Every record of that session / user / request (all given must match), in time order.

    User ids are redacted when logged (an e-mail becomes ``[EMAIL]``), so such an id is refused rather than
    answered with every e-mail user's lines.
    """
    if session_id is None and user_id is None and request_id is None:
        raise ValueError("timeline needs a session id, a user id or a request id")
    if user_id is not None and (logged := _REDACTOR.redact(user_id)) != user_id:
        raise ValueError(
            f"user id {user_id!r} is logged redacted (as {logged!r}) and cannot be told apart from other "
            "users' ids; look up one of its sessions instead"
        )
    wanted = {"session_id": session_id, "user_id": user_id, "request_id": request_id}
    wanted = {k: v for k, v in wanted.items() if v is not None}
    matches = [r for r in records if all(r.get(k) == v for k, v in wanted.items())]
    return sorted(matches, key=record_time)  # stable: lines logged in the same millisecond keep file order


# ---------------------------------------------------------------- rendering


def to_json(value: object) -> str:
    """JSON text for ``--json``: dataclasses become objects, datetimes ISO-8601 strings, paths strings."""
    return json.dumps(value, default=_json_default, ensure_ascii=False)


def _json_default(obj: object) -> object:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")
