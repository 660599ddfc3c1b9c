"""``restore``: put a backup back as the instance's data, or refuse, saying why.

Refused: a partial, truncated, tampered or undecryptable file (the archive checks of ``verify``), a
schema revision this code does not know (a backup of a newer ragvigil: its migrations are not
here), a database that fails its integrity check or whose counts differ from the manifest, a backend other than the configured one, and a non-empty data dir or database without
``force``. With ``force`` nothing is deleted: the old data dir is moved aside to
``<data dir>.before-restore-<time>`` (and an old PostgreSQL database dumped there first). The originals
go where the instance keeps them (``ops.backup.originals``): its data dir, or its object store.
Everything is extracted next to the target and moved in with one rename, so a failed restore
leaves the target as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ragvigil.config import Settings, reveal
from ragvigil.ops.backup import database, originals
from ragvigil.ops.backup.errors import RestoreRefused
from ragvigil.ops.backup.layout import opened
from ragvigil.ops.backup.verify import check_restored

log = logging.getLogger(__name__)


@dataclass
class RestoreReport:
    path: str
    backup_id: str
    data_dir: str
    backend: str
    schema_revision: str | None
    moved_aside: str | None = None
    row_counts: dict[str, int] = field(default_factory=dict)
    vector_counts: dict[str, int] = field(default_factory=dict)
    originals: int = 0  # originals restored
    originals_into: str | None = None  # where: the data dir's originals directory, or the object store


def _has_data(data_dir: Path, backup_dir: Path) -> bool:
    if not data_dir.is_dir():
        return False
    return any(p.resolve() != backup_dir for p in data_dir.iterdir())


def restore_backup(path: Path, settings: Settings, *, force: bool = False) -> RestoreReport:
    """Restore ``path`` into ``settings.data_dir`` (and its database); see the module docstring."""
    path = path.expanduser().resolve()
    target = settings.data_dir
    backend = database.backend_of(settings.db_url)
    target.parent.mkdir(parents=True, exist_ok=True)
    key = reveal(settings.backup.encryption_key)
    with opened(path, key, settings.backup.max_file_bytes, scratch_parent=target.parent) as (tar, manifest, scratch):
        if manifest.schema_revision not in database.known_revisions():
            raise RestoreRefused(
                f"{path}: schema revision {manifest.schema_revision} is not one this ragvigil knows "
                f"(head {database.head_revision()}): restore it with the ragvigil version that made it "
                f"({manifest.ragvigil_version}) or newer"
            )
        if manifest.backend != backend:
            raise RestoreRefused(f"{path}: a {manifest.backend} backup, but this instance uses {backend}")
        occupied = _has_data(target, settings.backup_dir)
        if backend == "postgresql":
            occupied = occupied or not database.postgres_is_empty(settings.db_url)
        if occupied and not force:
            raise RestoreRefused(
                f"{target} (or its database) is not empty: restore into an empty data dir, or pass --force "
                "to move the current data aside (nothing is deleted)"
            )
        check_restored(path, tar, manifest, scratch, settings, None)  # integrity and counts, in scratch
        extracted = scratch / "restored"
        data = extracted / "data"
        # before anything of the target changes: an object store that refuses leaves it as it was
        originals_count, originals_into = originals.put_back(settings, data)
        moved_aside: Path | None = None
        if occupied:
            moved_aside = target.with_name(f"{target.name}.before-restore-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
            moved_aside.mkdir()
            if backend == "postgresql":
                database.backup_postgres(settings.db_url, moved_aside / "postgres.dump")
        if backend == "postgresql":
            counts, revision = database.restore_postgres(
                extracted / "database" / "postgres.dump", settings.db_url, clean=occupied
            )
        else:
            counts, revision = manifest.row_counts, manifest.schema_revision
        if moved_aside is not None and target.exists():
            os.replace(target, moved_aside / target.name)
            kept_backups = moved_aside / target.name / settings.backup_dir.name
            if settings.backup_dir.parent == target and kept_backups.is_dir():
                shutil.move(kept_backups, data / settings.backup_dir.name)  # the backups stay where they were
        elif target.exists():
            for leftover in target.iterdir():  # only the backup dir: moved into the restored tree
                shutil.move(leftover, data / leftover.name)
            target.rmdir()
        os.replace(data, target)
        db_default = f"sqlite:///{target / 'ragvigil.db'}"
        if backend == "sqlite" and database.sqlite_path(settings.db_url) != database.sqlite_path(db_default):
            database.restore_sqlite(target / "ragvigil.db", settings.db_url)
            (target / "ragvigil.db").unlink()
    log.warning(
        "backup_restored",
        extra={"backup": str(path), "data_dir": str(target), "moved_aside": str(moved_aside) if moved_aside else None},
    )
    return RestoreReport(
        str(path),
        manifest.backup_id,
        str(target),
        backend,
        revision,
        str(moved_aside) if moved_aside else None,
        counts,
        manifest.vector_counts,
        originals_count,
        originals_into,
    )
