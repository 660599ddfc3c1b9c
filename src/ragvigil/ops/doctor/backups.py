"""The backup age group, against the smallest interface a backup implementation can offer.

The interface is ``NewestVerifiedBackup``: given the settings, the time of the newest backup that
passed verification, or None when there is none. The backup package (``ragvigil.ops.backup``) plugs
its function in with ``set_backup_clock``; until it is installed the check says "skipped".
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from datetime import UTC, datetime

from ragvigil.config import Settings
from ragvigil.ops.doctor.options import DoctorOptions
from ragvigil.ops.doctor.result import CheckResult, fail, ok, skipped, warn

NewestVerifiedBackup = Callable[[Settings], datetime | None]
BACKUP_PACKAGE = "ragvigil.ops.backup"
FIX_NONE = "run `ragvigil backup create`, then `ragvigil backup verify FILE`, and schedule them"

_clock: NewestVerifiedBackup | None = None


def set_backup_clock(clock: NewestVerifiedBackup | None) -> None:
    """The function the backup age check asks (None: none wired)."""
    global _clock
    _clock = clock


def backup_package_present() -> bool:
    try:
        return importlib.util.find_spec(BACKUP_PACKAGE) is not None
    except ModuleNotFoundError:
        return False


def check_backups(
    settings: Settings,
    options: DoctorOptions,
    *,
    clock: NewestVerifiedBackup | None = None,
    present: Callable[[], bool] = backup_package_present,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[CheckResult]:
    clock = clock or _clock
    if not present():
        return [skipped("backup", "backups not configured (no backup package in this ragvigil)")]
    if clock is None:
        return [skipped("backup", "backups not configured (no newest-verified-backup function wired)")]
    newest = clock(settings)
    if newest is None:
        return [fail("backup", "no verified backup", FIX_NONE)]
    age_h = (now() - newest).total_seconds() / 3600
    limit = settings.doctor.backup_max_age_h
    found = f"newest verified backup {newest.isoformat(timespec='seconds')} ({age_h:.1f} h old)"
    if age_h > limit:
        return [warn("backup", f"{found}, older than {limit:g} h", "check the backup schedule; " + FIX_NONE)]
    return [ok("backup", found)]
