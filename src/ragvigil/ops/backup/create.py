"""Make one backup of every store of an instance while it serves: one tar, written aside, then renamed.

Order matters for consistency: the data dir's files (journal, originals, signal recordings, safe
mode state) are copied first — originals kept in an object store at the same point, through their store
(``ops.backup.originals``) —, the database second, the vector indexes last. A journaled turn
replayed meanwhile is then in both the journal copy and the database copy (replay is idempotent by
message id), never in neither; a vector index newer than the database only holds vectors the
restored service drops as orphans, and chunks it lacks are re-queued at start (``resync``).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
from pydantic import SecretStr

from ragvigil import __version__
from ragvigil.config import MASK, Settings, reveal
from ragvigil.ops.backup import database, originals
from ragvigil.ops.backup.archive import ArchiveWriter
from ragvigil.ops.backup.crypto import EncryptingWriter
from ragvigil.ops.backup.errors import BackupError
from ragvigil.ops.backup.manifest import BackupManifest
from ragvigil.storage.durable import fsync_dir

log = logging.getLogger(__name__)

PREFIX = "ragvigil-backup-"
DB_MEMBER = {"sqlite": "database/ragvigil.db", "postgresql": "database/postgres.dump"}
# under the data dir but not copied as files: the database and indexes have their own consistent copy,
# logs and caches are rebuilt, backups never contain backups
_SKIP_TOP = {
    "ragvigil.db",
    "ragvigil.db-wal",
    "ragvigil.db-shm",
    "ragvigil.db-journal",
    "index",
    "logs",
    "cache",
    "serving.lock",  # whose process serves the dir: nothing to restore
}
SECRET_FILES = {"admin.key"}  # plain secrets: only in an encrypted backup


@dataclass
class BackupResult:
    path: Path
    manifest: BackupManifest


def backup_name(now: datetime, backup_id: str, encrypted: bool) -> str:
    return f"{PREFIX}{now.strftime('%Y%m%dT%H%M%SZ')}-{backup_id}.tar" + (".enc" if encrypted else "")


def effective_settings(settings: Settings, with_secrets: bool) -> dict[str, Any]:
    """The settings as the instance runs them; every secret masked unless the backup is encrypted."""

    def walk(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return reveal(value) if with_secrets else MASK
        if isinstance(value, dict):
            return {str(k): walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        if value is None or isinstance(value, bool | int | float | str):
            return value
        return str(value)

    return walk(settings.model_dump())


def _data_files(settings: Settings, skip: set[Path], with_secrets: bool) -> list[tuple[str, Path]]:
    root = settings.data_dir
    skip_top = _SKIP_TOP | ({"originals"} if originals.in_object_store(settings) else set())  # copied from there
    out: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel = here.relative_to(root)
        if rel == Path("."):
            dirnames[:] = [d for d in dirnames if d not in skip_top]
        dirnames[:] = sorted(d for d in dirnames if (here / d).resolve() not in skip)
        for name in sorted(filenames):
            if rel == Path(".") and (name in _SKIP_TOP or (name in SECRET_FILES and not with_secrets)):
                continue
            if name.endswith((".partial", ".tmp")):
                continue
            out.append(((Path("data") / rel / name).as_posix(), here / name))
    return out


def _index_snapshot(src: Path, scratch: Path) -> tuple[Path, Path | None, int]:
    """A copy of one faiss file (and its tombstones) that reads back; copied again once if it changed meanwhile.

    The store writes each index to a temp file and renames it, so an open file is never torn; the
    check catches an index and its tombstone file from two different flushes.
    """
    tomb_src = src.with_suffix(".tomb.json")
    for attempt in range(2):
        before = src.stat()
        dst = scratch / src.name
        shutil.copyfile(src, dst)
        tomb_dst = None
        if tomb_src.exists():
            tomb_dst = scratch / tomb_src.name
            shutil.copyfile(tomb_src, tomb_dst)
        after = src.stat()
        same = (before.st_ino, before.st_mtime_ns, before.st_size) == (after.st_ino, after.st_mtime_ns, after.st_size)
        try:
            index = faiss.read_index(str(dst))
            tombs = json.loads(tomb_dst.read_text()) if tomb_dst else []
        except (RuntimeError, ValueError, OSError) as exc:
            if attempt:
                raise BackupError(f"vector index {src} does not read back: {exc}") from exc
            continue
        if same or attempt:
            return dst, tomb_dst, int(index.ntotal) - len(tombs)
    raise BackupError(f"vector index {src} changed during two copies")  # not reached


def create_backup(
    settings: Settings,
    to: Path | None = None,
    *,
    encrypt: bool = False,
    flush_vectors: Callable[[], None] | None = None,
) -> BackupResult:
    """Back up the instance of ``settings`` into ``to`` (default ``backup.dir``).

    ``flush_vectors``: the running service's way to write its in-memory index changes first (the API
    and the scheduler pass the store's ``flush``); the CLI against a live data dir copies what is on disk.
    """
    started = time.monotonic()
    key = reveal(settings.backup.encryption_key)
    if encrypt and not key:
        raise BackupError("--encrypt needs backup.encryption_key (RAGVIGIL_BACKUP__ENCRYPTION_KEY)")
    to = (to or settings.backup_dir).expanduser().resolve()
    to.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    backup_id = secrets.token_hex(4)
    final = to / backup_name(now, backup_id, encrypt)
    partial = final.with_name(final.name + ".partial")
    backend = database.backend_of(settings.db_url)
    scratch = Path(tempfile.mkdtemp(prefix=".backup-", dir=to))
    try:
        with open(partial, "wb") as raw:
            sink = EncryptingWriter(raw, key) if encrypt and key else raw
            writer = ArchiveWriter(sink)  # type: ignore[arg-type]
            for name, path in _data_files(settings, {to, scratch}, with_secrets=encrypt):
                writer.add_file(name, path)
            if originals.in_object_store(settings):
                originals_count = originals.copy_into(settings, writer, scratch)
            else:
                originals_count = originals.count_members(writer.files)
            db_copy = scratch / ("db.sqlite" if backend == "sqlite" else "db.dump")
            if backend == "sqlite":
                copy = database.backup_sqlite(settings.db_url, db_copy)
            else:
                copy = database.backup_postgres(settings.db_url, db_copy)
            writer.add_file(DB_MEMBER[backend], copy.path)
            db_copy.unlink()
            if flush_vectors is not None:
                flush_vectors()
            vector_counts: dict[str, int] = {}
            if settings.index_dir.is_dir():
                for src in sorted(settings.index_dir.glob("*.faiss")):
                    dst, tomb, count = _index_snapshot(src, scratch)
                    writer.add_file(f"index/{src.name}", dst)
                    if tomb is not None:
                        writer.add_file(f"index/{tomb.name}", tomb)
                    vector_counts[src.name.removesuffix(".faiss")] = count
            config = json.dumps(effective_settings(settings, with_secrets=encrypt), indent=1, ensure_ascii=False)
            writer.add_bytes("config/settings.json", config.encode("utf-8"))
            manifest = BackupManifest(
                backup_id=backup_id,
                ragvigil_version=__version__,
                created_at=now.isoformat(),
                backend=backend,
                schema_revision=copy.revision,
                encrypted=encrypt,
                row_counts=copy.row_counts,
                vector_counts=vector_counts,
                index_kind=settings.retrieval.vector_index,
                originals=originals_count,
                originals_backend=originals.backend_of(settings),
                secrets_included=encrypt,
                duration_s=round(time.monotonic() - started, 3),
            )
            writer.finish(manifest)
            if isinstance(sink, EncryptingWriter):
                sink.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, final)
        fsync_dir(to)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info(
        "backup_created",
        extra={"backup": str(final), "bytes": final.stat().st_size, "duration_s": manifest.duration_s},
    )
    return BackupResult(final, manifest)
