"""Which backups to keep: the newest of each of the last N days and of the last M ISO weeks.

A pure function over timestamps (the rule is the one restic and borg call keep-daily/keep-weekly),
so it is tested on a list of times; ``prune`` applies it to a backup directory. The newest backup
is always kept, whatever the settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ragvigil.ops.backup.verify import read_record, record_path

_NAME = re.compile(r"^ragvigil-backup-(\d{8}T\d{6}Z)-([0-9a-f]{8})\.tar(\.enc)?$")


def to_keep(times: list[datetime], keep_daily: int, keep_weekly: int) -> set[datetime]:
    """The times to keep out of ``times``: per calendar day (UTC) and per ISO week, the newest, most recent first."""
    keep: set[datetime] = set()
    ordered = sorted(set(times), reverse=True)
    if ordered:
        keep.add(ordered[0])
    for bucket, n in ((lambda t: t.date(), keep_daily), (lambda t: t.isocalendar()[:2], keep_weekly)):
        seen: set[object] = set()
        for t in ordered:
            b = bucket(t.astimezone(UTC))
            if b in seen:
                continue
            if len(seen) >= n:
                break
            seen.add(b)
            keep.add(t)
    return keep


@dataclass
class BackupFile:
    path: Path
    backup_id: str
    created_at: datetime
    size: int
    encrypted: bool
    verified: dict[str, object] | None

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.path.name,
            "path": str(self.path),
            "backup_id": self.backup_id,
            "created_at": self.created_at.isoformat(),
            "bytes": self.size,
            "encrypted": self.encrypted,
            "verified_at": (self.verified or {}).get("verified_at") if self.verified else None,
            "verified_ok": (self.verified or {}).get("ok") if self.verified else None,
        }


def list_backups(directory: Path) -> list[BackupFile]:
    """The complete backups in ``directory`` (``.partial`` files are not), newest first."""
    out = []
    for p in directory.iterdir() if directory.is_dir() else []:
        m = _NAME.match(p.name)
        if m is None or not p.is_file():
            continue
        created = datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        out.append(BackupFile(p, m.group(2), created, p.stat().st_size, bool(m.group(3)), read_record(p)))
    return sorted(out, key=lambda b: (b.created_at, b.path.name), reverse=True)


def last_verified(directory: Path) -> datetime | None:
    """When the newest backup that passed verification was verified."""
    times = []
    for b in list_backups(directory):
        if b.verified and b.verified.get("ok") and isinstance(b.verified.get("verified_at"), str):
            times.append(datetime.fromisoformat(str(b.verified["verified_at"])))
    return max(times, default=None)


def prune(directory: Path, keep_daily: int, keep_weekly: int) -> list[Path]:
    """Delete the backups the rule does not keep (with their verification records); the deleted paths."""
    backups = list_backups(directory)
    keep = to_keep([b.created_at for b in backups], keep_daily, keep_weekly)
    deleted = []
    for b in backups:
        if b.created_at in keep:
            continue
        b.path.unlink(missing_ok=True)
        record_path(b.path).unlink(missing_ok=True)
        deleted.append(b.path)
    return deleted
