"""Scheduled backups: due when the schedule says, retention by day and week, the gauges and BackupMissing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from ragvigil.app import Runtime
from ragvigil.config import BackupSettings
from ragvigil.knowledge.smoke import retrieval_smoke
from ragvigil.ops import metrics
from ragvigil.ops.alerts.rules import default_rules
from ragvigil.ops.backup import list_backups, prune, to_keep
from ragvigil.ops.backup.service import BackupService
from tests.conftest import make_settings

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)  # a Tuesday


def test_retention_keeps_the_newest_of_7_days_and_of_4_weeks() -> None:
    # four backups a day (every 6 h) for 60 days, newest first
    times = [T0 - timedelta(hours=6 * i) for i in range(4 * 60)]
    keep = to_keep(times, keep_daily=7, keep_weekly=4)
    days = sorted({t.date() for t in times}, reverse=True)
    daily = {max(t for t in times if t.date() == d) for d in days[:7]}
    weeks = sorted({t.isocalendar()[:2] for t in times}, reverse=True)
    weekly = {max(t for t in times if t.isocalendar()[:2] == w) for w in weeks[:4]}
    assert keep == daily | weekly
    assert len(daily) == 7 and len(weekly) == 4 and 7 <= len(keep) < 11  # this week's newest is both
    assert max(times) in keep


def test_retention_never_drops_the_newest_and_keeps_everything_it_is_asked_to() -> None:
    assert to_keep([T0], 0, 0) == {T0}
    few = [T0 - timedelta(days=i) for i in range(3)]
    assert to_keep(few, 7, 4) == set(few)
    assert to_keep([], 7, 4) == set()


def test_prune_deletes_the_files_retention_drops_with_their_records(tmp_path: Path) -> None:
    for i in range(10):
        t = T0 - timedelta(days=i)
        f = tmp_path / f"ragvigil-backup-{t:%Y%m%dT%H%M%SZ}-{i:08x}.tar"
        f.write_bytes(b"x")
        (tmp_path / (f.name + ".verified.json")).write_text('{"ok": true, "verified_at": "2026-12-01T00:00:00+00:00"}')
    (tmp_path / "ragvigil-backup-20261201T040000Z-ffffffff.tar.partial").write_bytes(b"x")  # not a backup
    deleted = prune(tmp_path, keep_daily=3, keep_weekly=0)
    assert len(deleted) == 7
    assert [b.created_at for b in list_backups(tmp_path)] == [T0 - timedelta(days=i) for i in range(3)]
    assert len(list(tmp_path.glob("*.verified.json"))) == 3
    assert (tmp_path / "ragvigil-backup-20261201T040000Z-ffffffff.tar.partial").exists()


def test_due_at_the_daily_hour_once_and_at_once_when_nothing_is_verified(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "d", backup=BackupSettings(schedule="daily", daily_hour_utc=3))
    svc = BackupService(settings)
    assert svc.due(T0)  # nothing at all: catch up
    d = settings.backup_dir
    d.mkdir(parents=True)
    f = d / f"ragvigil-backup-{T0:%Y%m%dT%H%M%SZ}-00000001.tar"
    f.write_bytes(b"x")
    (d / (f.name + ".verified.json")).write_text(f'{{"ok": true, "verified_at": "{T0.isoformat()}"}}')
    assert not svc.due(T0 + timedelta(hours=5))  # today's is made
    assert not svc.due(T0 + timedelta(hours=23))  # tomorrow before 03:00
    assert svc.due(T0 + timedelta(days=1))  # tomorrow's slot
    off = BackupService(make_settings(tmp_path / "o"))
    assert not off.due(T0)


def test_the_scheduler_creates_verifies_prunes_and_sets_the_gauges(sample_runtime: Runtime) -> None:
    settings = sample_runtime.settings.model_copy(
        update={"backup": BackupSettings(schedule="interval", interval_h=1, keep_daily=1, keep_weekly=0)}
    )
    d = settings.backup_dir
    d.mkdir(parents=True)
    old = d / "ragvigil-backup-20200101T000000Z-0000abcd.tar"
    old.write_bytes(b"an old backup")
    metrics.BACKUP_LAST_VERIFIED.set(0)
    svc = BackupService(settings, sample_runtime.vectors.flush, retrieval_smoke)
    before = metrics.BACKUP_RUNS.labels("verified")._value.get()
    assert metrics.BACKUP_MAX_AGE._value.get() == 3 * 3600  # one hour + the 2 h grace
    svc.tick()
    job = svc.jobs()[0]
    assert job["status"] == "done" and job["verified"] is True, job
    assert job["by"] == "scheduler" and job["backup_s"] >= 0 and job["verify_s"] >= 0
    assert job["pruned"] == [old.name] and not old.exists()
    assert metrics.BACKUP_RUNS.labels("verified")._value.get() == before + 1
    assert metrics.BACKUP_LAST_VERIFIED._value.get() > (datetime.now(UTC) - timedelta(minutes=10)).timestamp()
    assert not svc.due(datetime.now(UTC))  # just made one


def _backup_missing(last_verified: float, max_age: float | None, now: float) -> bool:
    from ragvigil.ops.alerts.engine import AlertEngine
    from ragvigil.ops.alerts.history import SignalHistory

    history = SignalHistory(retention_s=7200)
    engine = AlertEngine(default_rules(), history)
    for t in range(0, 16 * 60, 15):
        samples = [("ragvigil_backup_last_verified_timestamp_seconds", {}, last_verified)]
        if max_age is not None:
            samples.append(("ragvigil_backup_max_age_seconds", {}, max_age))
        history.add(now + t, samples)
        engine.evaluate(now + t)
    return any(a.rule == "BackupMissing" for a in engine.alerts(["firing"]))


def test_backup_missing_fires_when_the_last_verified_is_too_old_or_never_and_only_when_scheduled() -> None:
    now = T0.timestamp()
    assert _backup_missing(0, 26 * 3600, now)  # never verified
    assert _backup_missing(now - 27 * 3600, 26 * 3600, now)  # too old
    assert not _backup_missing(now - 3600, 26 * 3600, now)  # an hour ago
    assert not _backup_missing(0, None, now)  # not scheduled: no max age, no alert
    rule = next(r for r in default_rules().rules if r.name == "BackupMissing")
    runbooks = (Path(__file__).resolve().parents[1] / "docs" / "runbooks.md").read_text(encoding="utf-8")
    assert "## BackupMissing" in runbooks and rule.spec.annotations["runbook_url"].endswith("#backupmissing")


def test_prometheus_fires_backup_missing_as_the_builtin_engine_does(tmp_path: Path) -> None:
    from tests.test_alert_export import test_prometheus_fires_what_the_builtin_engine_fires as same_on_both

    scenario = {
        "name": "never verified, scheduled with a 5-minute allowance: BackupMissing after its 10m",
        "series": {
            "ragvigil_backup_last_verified_timestamp_seconds": "0x80",
            "ragvigil_backup_max_age_seconds": "300x80",
        },
        "checks": ["5m", "12m", "16m"],
        "must_fire": {("16m", "BackupMissing")},
    }
    same_on_both(scenario, tmp_path)
