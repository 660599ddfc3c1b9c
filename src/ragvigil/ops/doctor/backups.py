"""The backup age group: the newest backup that passed ``backup verify``, against what the schedule allows.

The clock (``NewestVerifiedBackup``: settings → the time of the newest verified backup, or None) is the
backup package's own ``last_verified`` over ``backup.dir``; tests hand in their own. With
``backup.schedule`` set, a missing or too old verified backup is a failure (the ``BackupMissing`` alert's
rule: one period plus ``backup.grace_h``); with it off, only a warning against ``doctor.backup_max_age_h``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ragvigil.config import Settings
from ragvigil.ops.backup import last_verified
from ragvigil.ops.doctor.options import DoctorOptions
from ragvigil.ops.doctor.result import CheckResult, fail, ok, warn

NewestVerifiedBackup = Callable[[Settings], datetime | None]
FIX_NONE = "run `ragvigil backup create --verify`, and set RAGVIGIL_BACKUP__SCHEDULE (daily or interval)"


def newest_verified(settings: Settings) -> datetime | None:
    return last_verified(settings.backup_dir)


def allowed_age(settings: Settings) -> timedelta:
    """One schedule period plus its grace when scheduled (as ``BackupMissing``), else the doctor's own bound."""
    b = settings.backup
    if b.schedule == "off":
        return timedelta(hours=settings.doctor.backup_max_age_h)
    period = timedelta(days=1) if b.schedule == "daily" else timedelta(hours=b.interval_h)
    return period + timedelta(hours=b.grace_h)


def check_backups(
    settings: Settings,
    options: DoctorOptions,
    *,
    clock: NewestVerifiedBackup = newest_verified,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[CheckResult]:
    scheduled = settings.backup.schedule != "off"
    problem = fail if scheduled else warn
    newest = clock(settings)
    if newest is None:
        where = f"no verified backup in {settings.backup_dir}"
        return [problem("backup", where + ("" if scheduled else "; backups are not scheduled"), FIX_NONE)]
    age = now() - newest
    limit = allowed_age(settings)
    found = f"newest verified backup {newest.isoformat(timespec='seconds')} ({age.total_seconds() / 3600:.1f} h old)"
    if age > limit:
        limit_h = limit.total_seconds() / 3600
        return [problem("backup", f"{found}, older than {limit_h:g} h", "check the backup schedule; " + FIX_NONE)]
    return [ok("backup", found)]
