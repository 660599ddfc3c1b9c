"""Where the members of an extracted backup belong in a data dir (shared by verify and restore)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ragvigil.ops.backup import archive, crypto
from ragvigil.ops.backup.errors import BackupInvalid
from ragvigil.ops.backup.manifest import BackupManifest


def lay_out(extracted: Path) -> Path:
    """Turn ``extracted`` (``data/``, ``index/``, ``database/``, ``config/``) into a data dir; returns it."""
    data = extracted / "data"
    data.mkdir(exist_ok=True)
    index = extracted / "index"
    if index.is_dir():
        os.replace(index, data / "index")
    db = extracted / "database" / "ragvigil.db"
    if db.exists():
        os.replace(db, data / "ragvigil.db")
    return data


@contextmanager
def opened(
    path: Path, key: str | None, max_bytes: int, scratch_parent: Path | None = None
) -> Iterator[tuple[Path, BackupManifest, Path]]:
    """A checked backup: (plain tar, manifest, scratch dir), the scratch dir removed afterwards."""
    import shutil

    if not path.is_file():
        raise BackupInvalid(path, "file exists", "no such file")
    size = path.stat().st_size
    if size > max_bytes:
        raise BackupInvalid(path, "size bound", f"{size} bytes is over backup.max_file_bytes ({max_bytes})")
    scratch = Path(tempfile.mkdtemp(prefix="ragvigil-restore-", dir=scratch_parent))
    try:
        tar = path
        if crypto.is_encrypted(path):
            tar = scratch / "backup.tar"
            crypto.decrypt_file(path, tar, key)
        manifest = archive.open_checked(path, tar)
        yield tar, manifest, scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
