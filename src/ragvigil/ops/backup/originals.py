"""The kept originals in a backup, wherever the instance keeps them: members ``data/originals/<sha[:2]>/<sha>``.

Why one member layout for both backends: a backup of an instance whose originals are in an object store
holds them exactly as a backup of an embedded instance does (the layout of ``FilesystemOriginalStore``),
so any backup restores into either kind of instance. A filesystem instance's originals are copied with the
rest of its data dir, as they always were; an object store's are read through the ``OriginalStore``
protocol (each read checks the bytes against their digest) and added one by one. Restoring into an
instance configured with an object store puts every original back into it (``put`` recomputes each
digest) and leaves none in the data dir; restoring into an embedded one leaves them under
``<data dir>/originals``, where its store reads them. The manifest counts them; verify compares the
count and that each member's sha256 is its name.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ragvigil.config import Settings
from ragvigil.errors import RagvigilError
from ragvigil.ops.backup.errors import BackupError, BackupInvalid
from ragvigil.ops.backup.manifest import BackupManifest

if TYPE_CHECKING:
    from ragvigil.knowledge.originals import OriginalStore
    from ragvigil.ops.backup.archive import ArchiveWriter

MEMBER_DIR = "data/originals"
_MEMBER = re.compile(r"data/originals/([0-9a-f]{2})/([0-9a-f]{64})")
_COPY_BLOCK = 1 << 20


def backend_of(settings: Settings) -> str:
    return settings.originals.backend


def in_object_store(settings: Settings) -> bool:
    """True when the originals are not files of the data dir (so the data dir's copy must skip them)."""
    return backend_of(settings) != "filesystem"


def _store(settings: Settings) -> OriginalStore:
    from ragvigil.knowledge.originals import build_original_store

    return build_original_store(settings)


def member_digest(name: str) -> str | None:
    """The digest a backup member name holds an original of, else None."""
    found = _MEMBER.fullmatch(name)
    return found.group(2) if found and found.group(2).startswith(found.group(1)) else None


def count_members(names: Iterable[str]) -> int:
    return sum(1 for n in names if member_digest(n) is not None)


def copy_into(settings: Settings, writer: ArchiveWriter, scratch: Path) -> int:
    """Add every original of the instance's object store to the archive; the number added."""
    store = _store(settings)
    added = 0
    part = scratch / "original"
    try:
        for digest in store.iter_digests():
            with store.open(digest) as src, open(part, "wb") as dst:  # verified against the digest as it streams
                shutil.copyfileobj(src, dst, _COPY_BLOCK)
            writer.add_file(f"{MEMBER_DIR}/{digest[:2]}/{digest}", part)
            added += 1
    except RagvigilError as exc:
        raise BackupError(f"originals not copied from the object store: {exc}") from exc
    finally:
        part.unlink(missing_ok=True)
    return added


def check(path: Path, manifest: BackupManifest) -> str | None:
    """Each original member's sha256 is its name, and their number is the manifest's; the check's line."""
    if manifest.originals is None:
        return None  # a backup from before originals were counted
    found = 0
    for name, entry in manifest.files.items():
        digest = member_digest(name)
        if digest is None:
            continue
        if entry.sha256 != digest:
            raise BackupInvalid(path, "originals content-addressed", f"{name} holds bytes with sha256 {entry.sha256}")
        found += 1
    if found != manifest.originals:
        raise BackupInvalid(path, "originals count", f"{found} in the archive, the manifest says {manifest.originals}")
    return f"originals match ({found}, each named by its sha256)"


def put_back(settings: Settings, data: Path) -> tuple[int, str]:
    """Into an instance with an object store: every original of the restored ``data`` dir into it, the local
    copies removed. Embedded: they stay where its store reads them. (count, where they are)."""
    root = data / "originals"
    files = sorted(p for p in root.glob("*/*") if p.is_file()) if root.is_dir() else []
    if not in_object_store(settings):
        return len(files), str(root)
    from ragvigil.knowledge.originals import describe_original_store

    store = _store(settings)
    try:
        for f in files:
            with f.open("rb") as src:
                digest = store.put(src)
            if digest != f.name:
                raise BackupError(f"restored original {f.name} hashes to {digest}: not restored")
    except RagvigilError as exc:
        if isinstance(exc, BackupError):
            raise
        raise BackupError(f"originals not put back into the object store: {exc}") from exc
    shutil.rmtree(root, ignore_errors=True)
    return len(files), describe_original_store(store)
