"""Background jobs of a serving instance, driven by hand (no sleeping)."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ragvigil.app import Runtime
from tests.conftest import make_settings


def _line(ts: datetime, level: str, event: str) -> str:
    return json.dumps({"ts": ts.isoformat(), "level": level, "logger": "t", "event": event})


def test_log_retention_job_applies_the_configured_policy(tmp_path: Path) -> None:
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    rt = Runtime(make_settings(tmp_path / "data", log_retention_days={"INFO": 30, "ERROR": 90, "CRITICAL": None}))
    try:
        logs = rt.settings.log_dir
        logs.mkdir(parents=True, exist_ok=True)
        lines = [
            _line(now - timedelta(days=40), "INFO", "old info"),
            _line(now - timedelta(days=5), "INFO", "fresh info"),
            _line(now - timedelta(days=40), "ERROR", "recent enough error"),
            _line(now - timedelta(days=400), "CRITICAL", "kept forever"),
        ]
        with gzip.open(logs / "application.log.1.gz", "wt", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        (logs / "application.log").write_text(_line(now - timedelta(days=99), "INFO", "live file") + "\n")
        report = rt.enforce_log_retention(now=now)
        assert report.dropped["INFO"] == 1 and report.dropped_total == 1
        with gzip.open(logs / "application.log.1.gz", "rt", encoding="utf-8") as fh:
            events = [json.loads(x)["event"] for x in fh.read().splitlines()]
        assert events == ["fresh info", "recent enough error", "kept forever"]
        assert "live file" in (logs / "application.log").read_text()  # the open file is never touched
    finally:
        rt.close()


def test_journal_replay_job_moves_turns_into_the_database(tmp_path: Path) -> None:
    from ragvigil.chat.sessions import StoredMessage

    rt = Runtime(make_settings(tmp_path / "data"))
    try:
        now = datetime.now(UTC)
        rt.journal.write("s-journal", "default", "u1", [StoredMessage("m1", "user", "你好", now)])
        assert rt.replay_journal() == 1
        assert [m.content for m in rt.sessions.messages("s-journal")] == ["你好"]
        assert rt.journal.pending() == []
    finally:
        rt.close()
