"""Reading the log files back: rotated .gz files in order, ERROR lines once, corrupt lines counted, exact summaries.

The files are written by the real handlers (``file_handlers`` + ``JsonFormatter`` + ``RedactingFilter``, as
``configure_logging`` wires them) with a tiny ``max_bytes`` so both logs rotate into many ``.gz`` files.
"""

from __future__ import annotations

import gzip
import json
import logging
import sys
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import pytest

from ragvigil.ops.loganalysis import (
    ErrorKind,
    LatencyRow,
    ReadStats,
    error_summary,
    exception_line,
    iter_records,
    latency_summary,
    level_counts,
    parse_when,
    timeline,
    to_json,
)
from ragvigil.ops.logfiles import ERROR_LOG, MAIN_LOG, file_handlers
from ragvigil.ops.logging import JsonFormatter, request_id_var, session_id_var, user_id_var
from ragvigil.ops.redaction import RedactingFilter

BASE = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ROUNDS = 40  # each round: two stage_done lines and one POST /chat request, one second apart
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class StoreDown(Exception):
    pass


class Sent(NamedTuple):
    ts: str
    level: str
    event: str
    request_id: str | None
    session_id: str | None


def raised(exc: BaseException, cause: BaseException | None = None) -> ExcInfo:
    try:
        raise exc from cause
    except BaseException:
        info = sys.exc_info()
    assert info[0] is not None and info[1] is not None
    return info[0], info[1], info[2]


class Writer:
    """Emits records with chosen times and ids through the real handlers; remembers what it sent."""

    def __init__(self, log_dir: Path, max_bytes: int, backup_count: int) -> None:
        self.logger = logging.getLogger(f"test.loganalysis.{uuid.uuid4().hex}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        self.handlers = file_handlers(log_dir, JsonFormatter(), max_bytes=max_bytes, backup_count=backup_count)
        redacting = RedactingFilter()
        for h in self.handlers:
            h.addFilter(redacting)
            self.logger.addHandler(h)
        # application.log takes INFO+ in production, so stage_done (DEBUG) never reaches a file there;
        # lowered here so the stage latency summary has lines to read
        self.handlers[0].setLevel(logging.DEBUG)
        self.sent: list[Sent] = []

    def emit(
        self,
        second: int,
        level: int,
        event: str,
        ids: tuple[str | None, str | None, str | None] = (None, None, None),
        exc_info: ExcInfo | None = None,
        **extra: Any,
    ) -> None:
        """Log ``event`` at ``BASE + second`` with (request, session, user) ids in the context variables."""
        tokens = [
            (var, var.set(value)) for var, value in zip((request_id_var, session_id_var, user_id_var), ids, strict=True)
        ]
        try:
            record = self.logger.makeRecord(self.logger.name, level, __file__, 0, event, (), exc_info, extra=extra)
            record.created = (BASE + timedelta(seconds=second)).timestamp()
            self.logger.handle(record)
        finally:
            for var, token in reversed(tokens):
                var.reset(token)
        ts = (BASE + timedelta(seconds=second)).isoformat(timespec="milliseconds")
        self.sent.append(Sent(ts, logging.getLevelName(level), event, ids[0], ids[1]))

    def close(self) -> None:
        for h in self.handlers:
            self.logger.removeHandler(h)
            h.close()


def round_ids(i: int) -> tuple[str, str, str]:
    return f"r{i:02d}", ("s-a" if i % 2 == 0 else "s-b"), ("u-7" if i % 2 == 0 else "alice@example.com")


def write_scenario(log_dir: Path, max_bytes: int = 1000, backup_count: int = 100) -> list[Sent]:
    """A morning of traffic: requests, stages, a warning, four kinds of errors (one logged twice at once)."""
    w = Writer(log_dir, max_bytes, backup_count)
    try:
        second = 0
        for i in range(ROUNDS):
            ids = round_ids(i)
            w.emit(second, logging.DEBUG, "stage_done", ids, stage="retrieve", outcome="ok", ms=(i + 1) * 0.5)
            w.emit(second + 1, logging.DEBUG, "stage_done", ids, stage="generate", outcome="ok", ms=100 + i)
            w.emit(second + 2, logging.INFO, "http_request", ids, method="POST", route="/chat", status=200, ms=i + 1)
            second += 3
            if i % 10 == 9:
                w.emit(second, logging.ERROR, "unhandled_error", ids, raised(ValueError(f"bad input {i}\nmore")))
                second += 1
            if i == 20:
                w.emit(second, logging.WARNING, "generator_failed", ids, provider="llm", error="timeout")
                second += 1
            if i == 25:
                w.emit(second, logging.ERROR, "database_error", ids, error="connection refused")
                second += 1
            if i == 30:
                info = raised(StoreDown("index gone"), OSError("disk"))
                w.emit(second, logging.CRITICAL, "crash", ids, info)
                second += 1
        for ms in (3, 1, 2):
            w.emit(second, logging.INFO, "http_request", method="GET", route="/kb", status=200, ms=ms)
            second += 1
        for _ in range(2):  # the same line twice in one millisecond: two real events, not one duplicate
            w.emit(second, logging.ERROR, "journal_entry_unreadable", path="/data/journal/7.json")
        w.emit(second + 1, logging.INFO, "http_request", method="GET", route="/health", status=200, ms="n/a")
    finally:
        w.close()
    return w.sent


def rotated(log_dir: Path, name: str) -> list[Path]:
    """Rotated files of ``name``, oldest (highest number) first."""
    return sorted(log_dir.glob(f"{name}.*.gz"), key=lambda p: -int(p.name.split(".")[2]))


def gz_lines(path: Path) -> list[bytes]:
    return gzip.decompress(path.read_bytes()).splitlines(keepends=True)


def add_corrupt_lines(log_dir: Path) -> int:
    """Corrupt lines in the live file and inside a rotated .gz; returns how many (blank lines don't count)."""
    with (log_dir / MAIN_LOG).open("ab") as f:
        f.write(b'not json\n\n{"level": "INFO", "event": "no ts"}\n{"ts": "yesterday", "level": "INFO"}\n[1, 2]\n')
    target = rotated(log_dir, MAIN_LOG)[2]
    lines = gz_lines(target)
    lines.insert(len(lines) // 2, b'{"ts": "2026-06-01T12:00:0\n')  # a line cut short mid-write
    target.write_bytes(gzip.compress(b"".join(lines)))
    return 5


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Sent], int]:
    log_dir = tmp_path_factory.mktemp("logs")
    sent = write_scenario(log_dir)
    corrupt = add_corrupt_lines(log_dir)
    return log_dir, sent, corrupt


def keys(records: list[dict[str, Any]]) -> list[Sent]:
    return [Sent(r["ts"], r["level"], r["event"], r["request_id"], r["session_id"]) for r in records]


def at(second: int) -> datetime:
    return BASE + timedelta(seconds=second)


def sent_at(sent: list[Sent], event: str, request_id: str | None = None) -> list[datetime]:
    return [datetime.fromisoformat(s.ts) for s in sent if s.event == event and s.request_id == request_id]


# ---------------------------------------------------------------- iter_records


def test_every_line_once_in_time_order_across_rotated_files(scenario: tuple[Path, list[Sent], int]) -> None:
    log_dir, sent, corrupt = scenario
    assert len(rotated(log_dir, MAIN_LOG)) >= 10 and len(rotated(log_dir, ERROR_LOG)) >= 2  # really rotated
    stats = ReadStats()
    records = list(iter_records(log_dir, stats=stats))
    assert keys(records) == sent
    n_errors = sum(s.level in ("ERROR", "CRITICAL") for s in sent)
    assert n_errors == 8
    assert stats.duplicate_lines == n_errors  # each ERROR+ line was in both files
    assert stats.corrupt_lines == corrupt
    assert stats.lines_read == len(sent) + n_errors + corrupt
    assert stats.unreadable_files == []
    for name in (MAIN_LOG, ERROR_LOG):  # each log oldest first; the two are read side by side
        assert [p for p in stats.files_read if p.name.startswith(name)] == [*rotated(log_dir, name), log_dir / name]


def test_records_keep_their_fields(scenario: tuple[Path, list[Sent], int]) -> None:
    log_dir, _, _ = scenario
    records = list(iter_records(log_dir))
    crash = next(r for r in records if r["event"] == "crash")
    assert crash["user_id"] == "u-7" and crash["session_id"] == "s-a"
    assert "OSError: disk" in crash["exc"] and crash["exc"].rstrip().endswith("StoreDown: index gone")
    alice = next(r for r in records if r["request_id"] == "r01")
    assert alice["user_id"] == "[EMAIL]"  # redacted on the way in


def test_since_until_is_half_open(scenario: tuple[Path, list[Sent], int]) -> None:
    log_dir, sent, _ = scenario
    since, until = at(30), at(60)
    assert {since.isoformat(timespec="milliseconds"), until.isoformat(timespec="milliseconds")} <= {s.ts for s in sent}
    records = list(iter_records(log_dir, since=since, until=until))
    assert keys(records) == [s for s in sent if since <= datetime.fromisoformat(s.ts) < until]
    assert records[0]["ts"] == since.isoformat(timespec="milliseconds")
    naive = list(iter_records(log_dir, since=since.replace(tzinfo=None), until=until.replace(tzinfo=None)))
    assert naive == records  # naive bounds are UTC, like the log times
    shifted = until.astimezone(timezone(timedelta(hours=8)))
    assert list(iter_records(log_dir, since=since, until=shifted)) == records  # offsets compare by instant


def test_only_application_log_needs_no_deduplication(scenario: tuple[Path, list[Sent], int]) -> None:
    log_dir, sent, _ = scenario
    stats = ReadStats()
    assert keys(list(iter_records(log_dir, files=(MAIN_LOG,), stats=stats))) == sent
    assert stats.duplicate_lines == 0
    errors = list(iter_records(log_dir, files=(ERROR_LOG,)))
    assert keys(errors) == [s for s in sent if s.level in ("ERROR", "CRITICAL")]


def test_errors_whose_application_copy_rotated_away_still_show_once(tmp_path: Path) -> None:
    sent = write_scenario(tmp_path, backup_count=2)  # application.log keeps only the end
    main_lines = [json.loads(x) for p in rotated(tmp_path, MAIN_LOG) for x in gz_lines(p)]
    main_lines += [json.loads(x) for x in (tmp_path / MAIN_LOG).read_bytes().splitlines()]
    kept_from_main = {m["ts"] for m in main_lines}
    assert len(kept_from_main) < len({s.ts for s in sent})  # some lines really are gone
    stats = ReadStats()
    records = list(iter_records(tmp_path, stats=stats))
    errors = [s for s in sent if s.level in ("ERROR", "CRITICAL")]
    # error.log rotates too (backup_count=2) and may have lost its oldest errors: expect what its files hold
    error_ts = {json.loads(x)["ts"] for p in rotated(tmp_path, ERROR_LOG) for x in gz_lines(p)}
    error_ts |= {json.loads(x)["ts"] for x in (tmp_path / ERROR_LOG).read_bytes().splitlines()}
    expected = [s for s in sent if s.ts in kept_from_main or (s in errors and s.ts in error_ts)]
    assert keys(records) == expected
    assert any(s in errors and s.ts not in kept_from_main for s in expected)  # shown from error.log alone
    assert stats.duplicate_lines == sum(m["level"] in ("ERROR", "CRITICAL") for m in main_lines)


def test_gz_missing_its_trailer_still_yields_every_line(tmp_path: Path) -> None:
    sent = write_scenario(tmp_path)
    damaged = rotated(tmp_path, ERROR_LOG)[0]
    damaged.write_bytes(damaged.read_bytes()[:-8])  # CRC and size gone: the data itself is complete
    stats = ReadStats()
    assert keys(list(iter_records(tmp_path, stats=stats))) == sent
    assert stats.unreadable_files == [damaged]


def test_gz_cut_mid_stream_keeps_the_lines_before_the_cut(tmp_path: Path) -> None:
    sent = write_scenario(tmp_path)
    oldest = rotated(tmp_path, MAIN_LOG)[0]  # the first seconds: no errors, so error.log can't fill the gap
    original = [json.loads(x)["ts"] for x in gz_lines(oldest)]
    data = oldest.read_bytes()
    oldest.write_bytes(data[:-16])  # the 8-byte trailer and the last 8 bytes of compressed data
    stats = ReadStats()
    records = list(iter_records(tmp_path, stats=stats))
    got = keys(records)
    lost = len(sent) - len(got)
    assert 1 <= lost < len(original)
    lost_ts = set(original[-lost:])  # the tail of that file, nothing else
    assert got == [s for s in sent if s.ts not in lost_ts]
    assert stats.unreadable_files == [oldest] and stats.corrupt_lines == 0


def test_a_gz_that_is_not_gzip_is_listed_and_skipped(tmp_path: Path) -> None:
    line = json.dumps({"ts": "2026-06-01T20:00:00.000+08:00", "level": "INFO", "event": "hello"})
    (tmp_path / MAIN_LOG).write_text(line + "\n", encoding="utf-8")
    (tmp_path / f"{MAIN_LOG}.1.gz").write_bytes(b"this is not gzip\n")
    stats = ReadStats()
    assert [r["event"] for r in iter_records(tmp_path, since=at(0), until=at(1), stats=stats)] == ["hello"]
    assert stats.unreadable_files == [tmp_path / f"{MAIN_LOG}.1.gz"]


def test_bad_arguments_fail_at_the_call(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no log directory"):
        iter_records(tmp_path / "absent")
    with pytest.raises(ValueError, match="after until"):
        iter_records(tmp_path, since=at(10), until=at(0))


# ---------------------------------------------------------------- summaries


def test_error_summary_groups_by_event_and_exception_type(scenario: tuple[Path, list[Sent], int]) -> None:
    log_dir, sent, _ = scenario
    kinds = error_summary(iter_records(log_dir))
    unhandled = sent_at(sent, "unhandled_error", "r09") + sent_at(sent, "unhandled_error", "r39")
    journal = sent_at(sent, "journal_entry_unreadable")
    assert kinds == [
        ErrorKind("unhandled_error", "ValueError", 4, unhandled[0], unhandled[1], "ValueError: bad input 39", "r39"),
        ErrorKind("journal_entry_unreadable", None, 2, journal[0], journal[1], "journal_entry_unreadable", None),
        ErrorKind(
            "crash",
            f"{StoreDown.__module__}.StoreDown",
            1,
            *sent_at(sent, "crash", "r30") * 2,
            f"{StoreDown.__module__}.StoreDown: index gone",
            "r30",
        ),
        ErrorKind("database_error", None, 1, *sent_at(sent, "database_error", "r25") * 2, "connection refused", "r25"),
    ]
    assert error_summary(iter_records(log_dir), top=1) == kinds[:1]
    assert error_summary(iter_records(log_dir, since=at(1000))) == []


def test_level_counts(scenario: tuple[Path, list[Sent], int]) -> None:
    log_dir, _, _ = scenario
    counts = level_counts(iter_records(log_dir))
    assert list(counts.items()) == [("DEBUG", 80), ("INFO", 44), ("WARNING", 1), ("ERROR", 7), ("CRITICAL", 1)]
    custom = [{"level": "TRACE"}, {"level": "ERROR"}, {"level": "AUDIT"}, {"level": "AUDIT"}]
    assert list(level_counts(custom).items()) == [("ERROR", 1), ("AUDIT", 2), ("TRACE", 1)]


def test_route_latency_uses_nearest_rank_percentiles(scenario: tuple[Path, list[Sent], int]) -> None:
    log_dir, _, _ = scenario
    rows = latency_summary(iter_records(log_dir), by="route")
    # POST /chat: 1..40 ms -> 20th, 38th and 40th smallest; GET /kb: 3, 1, 2 ms; /health had no numeric ms
    assert rows == [
        LatencyRow("POST /chat", 40, 20.0, 38.0, 40.0, 40.0),
        LatencyRow("GET /kb", 3, 2.0, 3.0, 3.0, 3.0),
    ]


def test_stage_latency(scenario: tuple[Path, list[Sent], int]) -> None:
    log_dir, _, _ = scenario
    rows = latency_summary(iter_records(log_dir), by="stage")
    assert rows == [
        LatencyRow("generate", 40, 119.0, 137.0, 139.0, 139.0),
        LatencyRow("retrieve", 40, 10.0, 19.0, 20.0, 20.0),
    ]
    with pytest.raises(ValueError, match="'route' or 'stage'"):
        latency_summary([], by="user")  # type: ignore[arg-type]


# ---------------------------------------------------------------- timeline


def test_session_timeline_spans_rotated_files_in_order(scenario: tuple[Path, list[Sent], int]) -> None:
    log_dir, sent, _ = scenario
    lines = timeline(iter_records(log_dir), session_id="s-b")
    assert keys(lines) == [s for s in sent if s.session_id == "s-b"]
    assert len(lines) == 20 * 3 + 4 + 1  # odd rounds: 3 lines each, unhandled errors (9, 19, 29, 39), database_error


def test_user_and_request_timelines(scenario: tuple[Path, list[Sent], int]) -> None:
    log_dir, sent, _ = scenario
    records = list(iter_records(log_dir))
    assert keys(timeline(records, user_id="u-7")) == [s for s in sent if s.session_id == "s-a"]
    assert [r["event"] for r in timeline(records, request_id="r39")] == [
        "stage_done",
        "stage_done",
        "http_request",
        "unhandled_error",
    ]
    assert timeline(records, session_id="s-a", request_id="r39") == []  # every given id must match
    assert timeline(reversed(records), session_id="s-a") == timeline(records, session_id="s-a")


def test_timeline_refuses_ids_that_are_logged_redacted() -> None:
    with pytest.raises(ValueError, match=r"redacted \(as '\[EMAIL\]'\)"):
        timeline([], user_id="alice@example.com")
    with pytest.raises(ValueError, match="needs a session id"):
        timeline([])


# ---------------------------------------------------------------- exception lines


def formatted(info: ExcInfo) -> str:
    return logging.Formatter().formatException(info)


def test_exception_line_is_the_raised_exception_not_the_last_line() -> None:
    chained = formatted(raised(ValueError("first\nsecond"), KeyError("k")))
    assert chained.rstrip().endswith("second")
    assert exception_line(chained) == "ValueError: first"
    noted = ValueError("boom")
    noted.add_note("Hint: retry")
    assert exception_line(formatted(raised(noted))) == "ValueError: boom"
    assert exception_line(formatted(raised(KeyError("k"), None))) == "KeyError: 'k'"
    unraised = ValueError("never raised")
    assert exception_line(formatted((ValueError, unraised, None))) == "ValueError: never raised"
    assert exception_line("garbage without a traceback\n") is None


def test_exception_line_of_an_exception_group() -> None:
    inner = raised(TypeError("inner"))[1]
    group = formatted(raised(ExceptionGroup("two failures", [inner, ValueError("v")])))
    assert exception_line(group) == "ExceptionGroup: two failures (2 sub-exceptions)"


# ---------------------------------------------------------------- --since / --until


def test_parse_when_relative_and_iso() -> None:
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert parse_when("15m", now) == now - timedelta(minutes=15)
    assert parse_when(" 2h ", now) == now - timedelta(hours=2)
    assert parse_when("7d", now) == now - timedelta(days=7)
    assert parse_when("30s", now) == now - timedelta(seconds=30)
    assert parse_when("1w", now) == now - timedelta(weeks=1)
    assert parse_when("now", now) == now
    assert parse_when("2026-05-31T08:00:00+08:00", now) == datetime(2026, 5, 31, 0, 0, tzinfo=UTC)
    assert parse_when("2026-05-31T08:00:00Z", now) == datetime(2026, 5, 31, 8, 0, tzinfo=UTC)
    assert parse_when("2026-05-31", now) == datetime(2026, 5, 31, tzinfo=UTC)
    local = now.astimezone(timezone(timedelta(hours=8)))
    assert parse_when("2026-05-31T08:00", local) == datetime(2026, 5, 31, 0, 0, tzinfo=UTC)  # naive: now's zone
    assert parse_when("1h", now.replace(tzinfo=None)) == now - timedelta(hours=1)


@pytest.mark.parametrize("value", ["", "yesterday", "15", "15 minutes", "-5m", "5M", "2026-13-01", "1.5h"])
def test_parse_when_rejects_bad_values_clearly(value: str) -> None:
    with pytest.raises(ValueError, match=r"cannot read .* as a time: use ISO-8601 .* or an age like 30s, 15m"):
        parse_when(value, BASE)


def test_parse_when_rejects_ages_before_year_one() -> None:
    with pytest.raises(ValueError, match="further back"):
        parse_when("99999999d", BASE)


# ---------------------------------------------------------------- rendering


def test_to_json_writes_dataclasses_times_and_paths() -> None:
    kind = ErrorKind("crash", "OSError", 2, at(0), at(5), "OSError: disk", "r1")
    stats = ReadStats(files_read=[Path("/logs/application.log")], corrupt_lines=1)
    out = json.loads(to_json({"errors": [kind], "stats": stats}))
    assert out["errors"] == [
        {
            "event": "crash",
            "exc_type": "OSError",
            "count": 2,
            "first_seen": "2026-06-01T12:00:00+00:00",
            "last_seen": "2026-06-01T12:00:05+00:00",
            "example": "OSError: disk",
            "example_request_id": "r1",
        }
    ]
    assert out["stats"]["files_read"] == ["/logs/application.log"] and out["stats"]["corrupt_lines"] == 1
