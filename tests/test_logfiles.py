"""Rotated log files are gzipped, error.log holds only errors, and retention trims lines by level and age."""

from __future__ import annotations

import gzip
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ragvigil.ops.logfiles import RetentionPolicy, enforce_retention, file_handlers
from ragvigil.ops.logging import JsonFormatter

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def file_logger(tmp_path: Path) -> Iterator[tuple[logging.Logger, list[logging.Handler]]]:
    logger = logging.getLogger(f"test.logfiles.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handlers: list[logging.Handler] = []
    yield logger, handlers
    for h in handlers:
        logger.removeHandler(h)
        h.close()


def attach(logger: logging.Logger, handlers: list[logging.Handler], new: list[logging.Handler]) -> None:
    handlers.extend(new)
    for h in new:
        logger.addHandler(h)


def events(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["event"] for line in f]


def test_rotation_produces_gz_files_holding_every_line(
    tmp_path: Path, file_logger: tuple[logging.Logger, list[logging.Handler]]
) -> None:
    logger, handlers = file_logger
    attach(logger, handlers, file_handlers(tmp_path, JsonFormatter(), max_bytes=600, backup_count=100))
    sent = [f"message {i:03d} 数据" + "x" * 40 for i in range(60)]
    for msg in sent:
        logger.info(msg)
    rotated = sorted(tmp_path.glob("application.log.*"), key=lambda p: int(p.name.split(".")[2]))
    assert len(rotated) >= 5
    assert [p.name for p in rotated] == [f"application.log.{n}.gz" for n in range(1, len(rotated) + 1)]
    received = [e for p in reversed(rotated) for e in events(p)] + events(tmp_path / "application.log")
    assert received == sent  # oldest in the highest-numbered file, nothing lost or duplicated
    assert not list(tmp_path.glob("*.part")) and not (tmp_path / "error.log.1.gz").exists()


def test_rotation_counts_the_bytes_already_in_the_file_and_multibyte_text(
    tmp_path: Path, file_logger: tuple[logging.Logger, list[logging.Handler]]
) -> None:
    old = json.dumps({"ts": "2026-01-01T00:00:00+00:00", "level": "INFO", "event": "before restart"}) + "\n"
    (tmp_path / "application.log").write_text(old * 6)  # a restart finds 480 bytes already written
    logger, handlers = file_logger
    attach(logger, handlers, file_handlers(tmp_path, JsonFormatter(), max_bytes=600, backup_count=100))
    for i in range(30):
        logger.info("数据" * 12 + str(i))  # 3 bytes per character in UTF-8
    files = [*tmp_path.glob("application.log.*.gz"), tmp_path / "application.log"]
    sizes = [len(gzip.decompress(p.read_bytes())) if p.suffix == ".gz" else p.stat().st_size for p in files]
    assert len(files) >= 4 and max(sizes) <= 600
    oldest = max(files[:-1], key=lambda p: int(p.name.split(".")[2]))
    assert events(oldest) == ["before restart"] * 6  # rolled over at the first record that did not fit


def test_backup_count_caps_the_number_of_gz_files(
    tmp_path: Path, file_logger: tuple[logging.Logger, list[logging.Handler]]
) -> None:
    logger, handlers = file_logger
    attach(logger, handlers, file_handlers(tmp_path, JsonFormatter(), max_bytes=400, backup_count=2))
    sent = [f"line {i:03d} " + "y" * 60 for i in range(40)]
    for msg in sent:
        logger.info(msg)
    assert sorted(p.name for p in tmp_path.glob("application.log*")) == [
        "application.log",
        "application.log.1.gz",
        "application.log.2.gz",
    ]
    kept = events(tmp_path / "application.log.2.gz") + events(tmp_path / "application.log.1.gz")
    kept += events(tmp_path / "application.log")
    assert kept == sent[-len(kept) :]  # the newest lines, contiguous


def test_error_log_gets_only_errors(tmp_path: Path, file_logger: tuple[logging.Logger, list[logging.Handler]]) -> None:
    logger, handlers = file_logger
    attach(logger, handlers, file_handlers(tmp_path, JsonFormatter()))
    logger.debug("d")
    logger.info("i")
    logger.warning("w")
    logger.error("e")
    logger.critical("c")
    try:
        raise KeyError("k")
    except KeyError:
        logger.exception("x")
    for h in handlers:
        h.flush()
    assert events(tmp_path / "application.log") == ["i", "w", "e", "c", "x"]
    assert events(tmp_path / "error.log") == ["e", "c", "x"]


def line(level: str, age: timedelta, event: str, ts_format: str = "iso") -> str:
    when = NOW - age
    ts = when.isoformat() if ts_format == "iso" else when.replace(tzinfo=None).isoformat()
    if ts_format == "z":
        ts = when.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return json.dumps({"ts": ts, "level": level, "logger": "t", "event": event}, ensure_ascii=False)


def write(path: Path, lines: list[str]) -> None:
    data = "".join(x + "\n" for x in lines).encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def read_lines(path: Path) -> list[str]:
    data = path.read_bytes()
    return (gzip.decompress(data) if path.suffix == ".gz" else data).decode().splitlines()


def days(n: float) -> timedelta:
    return timedelta(days=n)


def test_retention_drops_exactly_the_expired_lines(tmp_path: Path) -> None:
    plain = [
        line("INFO", days(10), "info fresh"),
        line("INFO", days(31), "info old"),
        line("INFO", days(30), "info on the boundary"),
        line("WARNING", days(59), "warning fresh", ts_format="naive"),
        line("WARNING", days(61), "warning old", ts_format="naive"),
        line("ERROR", days(89), "error fresh", ts_format="z"),
        line("ERROR", days(91), "error old", ts_format="z"),
        line("CRITICAL", days(3650), "critical ancient"),
    ]
    gz = [
        line("INFO", days(40), "日志 old"),
        "not json at all",
        '{"level": "INFO", "event": "no ts"}',
        '{"ts": "yesterday", "level": "INFO"}',
        "[1, 2, 3]",
        line("CRITICAL", days(400), "critical old"),
        line("ERROR", days(1), "error new"),
    ]
    write(tmp_path / "application.log.1", plain)
    write(tmp_path / "application.log.2.gz", gz)
    write(tmp_path / "error.log.1.gz", [line("ERROR", days(100), "e1"), line("ERROR", days(200), "e2")])
    live = [line("INFO", days(365), "live but old")]
    write(tmp_path / "application.log", live)
    write(tmp_path / "error.log", live)
    write(tmp_path / "other.log.1", live)  # not ours

    report = enforce_retention(tmp_path, RetentionPolicy(), now=NOW)

    assert read_lines(tmp_path / "application.log.1") == [plain[i] for i in (0, 2, 3, 5, 7)]
    assert read_lines(tmp_path / "application.log.2.gz") == gz[1:]
    assert not (tmp_path / "error.log.1.gz").exists()
    for name in ("application.log", "error.log", "other.log.1"):
        assert read_lines(tmp_path / name) == live
    assert report.dropped == {"INFO": 2, "WARNING": 1, "ERROR": 3}
    assert report.dropped_total == 6
    assert report.corrupt_lines == 4
    assert report.files_scanned == 3
    assert report.files_rewritten == [tmp_path / "application.log.1", tmp_path / "application.log.2.gz"]
    assert report.files_deleted == [tmp_path / "error.log.1.gz"]
    assert report.kept_lines == 5 + 6
    assert not list(tmp_path.glob(".*.tmp"))

    again = enforce_retention(tmp_path, RetentionPolicy(), now=NOW)
    assert again.dropped_total == 0 and not again.files_rewritten and again.corrupt_lines == 4


def test_file_of_only_corrupt_or_unreadable_data_is_kept(tmp_path: Path) -> None:
    raw = b"\xff\xfe not utf-8\n" + (line("INFO", days(90), "old") + "\n").encode()
    (tmp_path / "application.log.1").write_bytes(raw)
    broken = gzip.compress((line("INFO", days(90), "old") + "\n").encode())[:-6]
    (tmp_path / "error.log.2.gz").write_bytes(broken)

    report = enforce_retention(tmp_path, now=NOW)

    assert (tmp_path / "application.log.1").read_bytes() == b"\xff\xfe not utf-8\n"  # kept byte for byte
    assert (tmp_path / "error.log.2.gz").read_bytes() == broken
    assert report.unreadable_files == [tmp_path / "error.log.2.gz"]
    assert report.corrupt_lines == 1 and report.dropped == {"INFO": 1}
    assert report.files_rewritten == [tmp_path / "application.log.1"] and not report.files_deleted


def test_policy_is_configurable(tmp_path: Path) -> None:
    lines = [line("DEBUG", days(2), "d"), line("INFO", days(2), "i"), line("NOTICE", days(999), "custom level")]
    write(tmp_path / "application.log.1", lines)
    policy = RetentionPolicy(days={"DEBUG": 1, "INFO": 3, "CRITICAL": None}, other_days=None)
    report = enforce_retention(tmp_path, policy, now=NOW)
    assert read_lines(tmp_path / "application.log.1") == lines[1:]
    assert report.dropped == {"DEBUG": 1}


def test_retention_on_files_written_by_the_handlers(
    tmp_path: Path, file_logger: tuple[logging.Logger, list[logging.Handler]]
) -> None:
    logger, handlers = file_logger
    attach(logger, handlers, file_handlers(tmp_path, JsonFormatter(), max_bytes=300, backup_count=100))
    for i in range(12):
        logger.info("info %d", i)
        logger.warning("warning %d", i)
        logger.critical("critical %d", i)
    for h in handlers:
        h.close()
    live_before = (tmp_path / "application.log").read_bytes()
    assert list(tmp_path.glob("application.log.*.gz"))

    report = enforce_retention(tmp_path, now=datetime.now(UTC) + days(45))

    assert report.dropped["INFO"] > 0 and set(report.dropped) == {"INFO"} and report.corrupt_lines == 0
    left = [e for p in tmp_path.glob("application.log.*.gz") for e in events(p)]
    assert left and not any(e.startswith("info") for e in left)
    assert (tmp_path / "application.log").read_bytes() == live_before
