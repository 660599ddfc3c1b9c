"""``verify``: a backup is good only when it restores. Every check, in order, stops at the first failure.

1. the file: complete (not ``.partial``), within its size bound, decrypted with the right key;
2. the archive: a readable tar, safe member names, a manifest, every member's sha256 and size, no
   member outside the manifest;
3. the restore: extracted into a scratch directory, the database's own integrity check
   (``PRAGMA integrity_check``, or ``pg_restore --list`` and — given a scratch PostgreSQL — a real
   restore), row and vector counts equal to the manifest's;
4. a retrieval smoke test run against the restored copy by the caller's ``smoke`` function.
A ``<file>.verified.json`` record says when it was verified and what passed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import faiss

from ragvigil.config import SecretUrl, Settings, reveal
from ragvigil.ops.backup import archive, database, originals
from ragvigil.ops.backup.errors import BackupError, BackupInvalid
from ragvigil.ops.backup.layout import lay_out, opened
from ragvigil.ops.backup.manifest import BackupManifest

# (settings of the restored copy) → what it found; raises when the restored copy cannot answer
SmokeTest = Callable[[Settings], str]


@dataclass
class VerifyReport:
    path: str
    ok: bool
    backup_id: str | None = None
    checks: list[str] = field(default_factory=list)
    failed_check: str | None = None
    error: str | None = None
    verified_at: str = ""
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def record_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def read_record(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(record_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _compare(archive_path: Path, what: str, found: dict[str, int], expected: dict[str, int]) -> None:
    if found != expected:
        diff = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
        k = diff[0]
        raise BackupInvalid(
            archive_path, f"{what} counts", f"{k}: {found.get(k)} restored, the manifest says {expected.get(k)}"
        )


def _vector_counts(index_dir: Path) -> dict[str, int]:
    out = {}
    for f in sorted(index_dir.glob("*.faiss")) if index_dir.is_dir() else []:
        tomb = f.with_suffix(".tomb.json")
        out[f.name.removesuffix(".faiss")] = int(faiss.read_index(str(f)).ntotal) - (
            len(json.loads(tomb.read_text())) if tomb.exists() else 0
        )
    return out


def check_restored(
    path: Path, tar: Path, manifest: BackupManifest, scratch: Path, settings: Settings, scratch_db_url: str | None
) -> tuple[list[str], Settings | None]:
    """Extract into ``scratch`` and run the database and count checks; the restored copy's settings, if any."""
    checks: list[str] = []
    extracted = scratch / "restored"
    archive.extract(tar, extracted)
    data = lay_out(extracted)
    restored_url: str | None = None
    if manifest.backend == "sqlite":
        counts, revision = database.check_sqlite(data / "ragvigil.db", path)
        checks.append("PRAGMA integrity_check ok")
        restored_url = f"sqlite:///{data / 'ragvigil.db'}"
    else:
        dump = extracted / "database" / "postgres.dump"
        entries = database.list_postgres_dump(dump, path)
        checks.append(f"pg_restore --list ok ({entries} entries)")
        counts, revision = manifest.row_counts, manifest.schema_revision
        if scratch_db_url:
            if not database.postgres_is_empty(scratch_db_url):
                raise BackupError("the scratch database for verify must be empty")
            try:
                counts, revision = database.restore_postgres(dump, scratch_db_url, clean=False)
            except BackupError as exc:
                raise BackupInvalid(path, "pg_restore into scratch", str(exc)) from exc
            checks.append("restored into the scratch database")
            restored_url = scratch_db_url
    if revision != manifest.schema_revision:
        raise BackupInvalid(
            path, "schema revision", f"{revision} restored, the manifest says {manifest.schema_revision}"
        )
    _compare(path, "row", counts, manifest.row_counts)
    checks.append(f"row counts match ({sum(counts.values())} rows in {len(counts)} tables)")
    try:
        vectors = _vector_counts(data / "index")
    except (RuntimeError, ValueError, OSError) as exc:
        raise BackupInvalid(path, "vector index readable", str(exc)) from exc
    _compare(path, "vector", vectors, manifest.vector_counts)
    checks.append(f"vector counts match ({sum(vectors.values())} vectors)")
    if (kept := originals.check(path, manifest)) is not None:
        checks.append(kept)
    if restored_url is None:
        return checks, None
    restored = settings.model_copy(
        update={
            "data_dir": data,
            "database_url": SecretUrl(restored_url),
            "retrieval": settings.retrieval.model_copy(update={"vector_index": manifest.index_kind}),
            # the restored copy reads its originals from the extracted files, never the live object store
            "originals": settings.originals.model_copy(update={"backend": "filesystem"}),
        }
    )
    return checks, restored


def verify_backup(
    path: Path,
    settings: Settings,
    *,
    scratch_database_url: str | None = None,
    smoke: SmokeTest | None = None,
    write_record: bool = True,
) -> VerifyReport:
    """Run every check on ``path``; the report says which passed and, on failure, which check failed."""
    started = time.monotonic()
    path = path.expanduser().resolve()
    report = VerifyReport(str(path), ok=False)
    try:
        with opened(path, reveal(settings.backup.encryption_key), settings.backup.max_file_bytes) as (tar, m, scratch):
            report.backup_id = m.backup_id
            report.checks.append(f"archive ok ({len(m.files)} files, sha256 each)")
            checks, restored = check_restored(path, tar, m, scratch, settings, scratch_database_url)
            report.checks += checks
            if smoke is not None and restored is not None:
                try:
                    report.checks.append("retrieval smoke test: " + smoke(restored))
                except Exception as exc:
                    raise BackupInvalid(path, "retrieval smoke test", str(exc)) from exc
            elif smoke is not None:
                report.checks.append("retrieval smoke test not run: no scratch database to restore into")
        report.ok = True
    except BackupInvalid as exc:
        report.failed_check, report.error = exc.check, str(exc)
    except BackupError as exc:
        report.failed_check, report.error = "verification", str(exc)
    except (OSError, RuntimeError, ValueError) as exc:  # a full scratch disk, an unreadable member
        report.failed_check, report.error = "verification", f"{path}: {type(exc).__name__}: {exc}"
    report.verified_at = datetime.now(UTC).isoformat()
    report.duration_s = round(time.monotonic() - started, 3)
    if write_record and path.is_file():
        tmp = record_path(path).with_suffix(".tmp")
        tmp.write_text(json.dumps(report.as_dict(), indent=1), encoding="utf-8")
        os.replace(tmp, record_path(path))
    return report
