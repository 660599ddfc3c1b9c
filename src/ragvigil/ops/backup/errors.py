"""What a backup, a verification or a restore can refuse, each naming the file and the check that failed.

Why one small hierarchy: the CLI prints the message and sets the exit code, the API maps the same
classes to a JSON error with one handler, and a test can tell a tampered file from a wrong key.
"""

from __future__ import annotations

from pathlib import Path

from ragvigil.errors import RagvigilError


class BackupError(RagvigilError):
    """A backup could not be made (a store could not be read, ``pg_dump`` failed, the disk is full)."""

    status = 500
    code = "backup_failed"


class BackupInvalid(BackupError):
    """A backup file failed a check: truncated, tampered, unreadable. ``check`` names the check."""

    status = 422
    code = "backup_invalid"

    def __init__(self, path: Path | str, check: str, detail: str) -> None:
        self.path, self.check, self.detail = str(path), check, detail
        super().__init__(f"{path}: check '{check}' failed: {detail}")


class WrongKey(BackupInvalid):
    """An encrypted backup and no key, or another key than the one it was made with."""

    code = "backup_wrong_key"


class RestoreRefused(BackupError):
    """A restore that would lose data or cannot be right (a newer schema, a non-empty target without force)."""

    status = 409
    code = "restore_refused"


class BackupBusy(BackupError):
    """A backup is already running in this process: one at a time."""

    status = 409
    code = "backup_running"


class BackupNotConfigured(BackupError):
    """What was asked needs a setting that is not there (an encrypted backup without ``backup.encryption_key``)."""

    status = 409
    code = "backup_not_configured"
