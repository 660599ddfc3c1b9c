"""Backups of every store of an instance, verified by restoring them, with a schedule and retention.

The public face: ``create_backup`` (one tar with a manifest, optionally encrypted), ``verify_backup``
(restore to scratch and check), ``restore_backup`` (refuses what it cannot restore exactly),
``BackupManifest``, the retention rule and the errors. ``service.BackupService`` runs them inside
the serving process (the API route and the scheduler).
"""

from __future__ import annotations

from ragvigil.ops.backup.create import BackupResult, create_backup
from ragvigil.ops.backup.errors import (
    BackupBusy,
    BackupError,
    BackupInvalid,
    BackupNotConfigured,
    RestoreRefused,
    WrongKey,
)
from ragvigil.ops.backup.manifest import BackupManifest
from ragvigil.ops.backup.restore import RestoreReport, restore_backup
from ragvigil.ops.backup.retention import BackupFile, last_verified, list_backups, prune, to_keep
from ragvigil.ops.backup.verify import VerifyReport, verify_backup

__all__ = [
    "BackupBusy",
    "BackupError",
    "BackupFile",
    "BackupInvalid",
    "BackupManifest",
    "BackupNotConfigured",
    "BackupResult",
    "RestoreRefused",
    "RestoreReport",
    "VerifyReport",
    "WrongKey",
    "create_backup",
    "last_verified",
    "list_backups",
    "prune",
    "restore_backup",
    "to_keep",
    "verify_backup",
]
