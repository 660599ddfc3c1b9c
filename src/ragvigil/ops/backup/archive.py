"""The backup file itself: one plain tar, each member hashed as it is written, every check on reading.

Why plain tar: the standard library reads and writes it, nothing else is needed to restore by hand
(``tar -xf``), and members are streamed, so memory stays flat whatever the size. Reading trusts
nothing: a member outside the manifest, a link, a device or a name leaving the target directory is
refused before anything is extracted.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ragvigil.ops.backup.errors import BackupInvalid
from ragvigil.ops.backup.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, BackupManifest, FileEntry

_READ = 1 << 20
MAX_MEMBERS = 5_000_000  # a data dir of more files than this is not one ragvigil wrote


class _Hashing(io.RawIOBase):
    """Reads at most ``size`` bytes of ``f`` and hashes them (a file that grows while copied is cut at its size)."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.left, self.hash = f, size, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        self.hash.update(data)
        return data


class ArchiveWriter:
    """Adds files and bytes to a tar stream and records each member's sha256 and size."""

    def __init__(self, out: BinaryIO) -> None:
        self.tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115 - closed by finish
        self.files: dict[str, FileEntry] = {}

    def _info(self, name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, int(time.time()), 0o600
        return info

    def add_bytes(self, name: str, data: bytes) -> None:
        self.tar.addfile(self._info(name, len(data)), io.BytesIO(data))
        self.files[name] = FileEntry(hashlib.sha256(data).hexdigest(), len(data))

    def add_file(self, name: str, path: Path) -> bool:
        """Add ``path`` as it is now; False when it vanished meanwhile (a journal entry replayed)."""
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            return False
        with f:
            size = os.fstat(f.fileno()).st_size
            reader = _Hashing(f, size)
            self.tar.addfile(self._info(name, size), reader)
            self.files[name] = FileEntry(reader.hash.hexdigest(), size)
        return True

    def finish(self, manifest: BackupManifest) -> None:
        """The manifest goes last: it lists every member before it."""
        manifest.files = dict(self.files)
        data = manifest.to_json()
        self.tar.addfile(self._info(MANIFEST_NAME, len(data)), io.BytesIO(data))
        self.tar.close()


def safe_name(name: str) -> bool:
    p = PurePosixPath(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts and "\\" not in name and "\x00" not in name


def _sha256(f: BinaryIO) -> str:
    h = hashlib.sha256()
    while chunk := f.read(_READ):
        h.update(chunk)
    return h.hexdigest()


def open_checked(archive: Path, tar_path: Path) -> BackupManifest:
    """Every check that needs no restore: readable tar, safe member names, manifest, each member's sha256.

    ``archive`` is the file the operator named (for messages), ``tar_path`` the plain tar (decrypted).
    """
    if archive.name.endswith(".partial"):
        raise BackupInvalid(archive, "complete file", "a .partial file is a backup that never finished")
    try:
        tar = tarfile.open(tar_path, mode="r:")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError) as exc:
        raise BackupInvalid(archive, "tar readable", str(exc)) from exc
    with tar:
        members: list[tarfile.TarInfo] = []
        try:
            for member in tar:
                members.append(member)
                if len(members) > MAX_MEMBERS:
                    raise BackupInvalid(archive, "member count", f"more than {MAX_MEMBERS} members")
        except (tarfile.TarError, OSError) as exc:
            raise BackupInvalid(archive, "tar readable", f"truncated or damaged: {exc}") from exc
        names = [m.name for m in members]
        for m in members:
            if not safe_name(m.name):
                raise BackupInvalid(archive, "member names", f"{m.name!r} would land outside the target directory")
            if not m.isfile():
                raise BackupInvalid(archive, "member types", f"{m.name!r} is not a regular file")
        if len(set(names)) != len(names):
            raise BackupInvalid(archive, "member names", "a member appears twice")
        if MANIFEST_NAME not in names:
            raise BackupInvalid(archive, "manifest present", f"no {MANIFEST_NAME} in the archive")
        info = tar.getmember(MANIFEST_NAME)
        if info.size > MAX_MANIFEST_BYTES:
            raise BackupInvalid(archive, "manifest present", f"{MANIFEST_NAME} is {info.size} bytes")
        try:
            manifest = BackupManifest.from_json(tar.extractfile(info).read())  # type: ignore[union-attr]
        except (ValueError, KeyError, TypeError) as exc:
            raise BackupInvalid(archive, "manifest readable", str(exc)) from exc
        present = set(names) - {MANIFEST_NAME}
        if extra := sorted(present - set(manifest.files)):
            raise BackupInvalid(archive, "no member outside the manifest", f"{extra[0]} is not listed")
        if missing := sorted(set(manifest.files) - present):
            raise BackupInvalid(archive, "every listed member present", f"{missing[0]} is missing")
        for m in members:
            if m.name == MANIFEST_NAME:
                continue
            entry = manifest.files[m.name]
            if m.size != entry.size:
                raise BackupInvalid(archive, f"size of {m.name}", f"{m.size} bytes, the manifest says {entry.size}")
            try:
                digest = _sha256(tar.extractfile(m))  # type: ignore[arg-type]
            except (tarfile.TarError, OSError) as exc:
                raise BackupInvalid(archive, f"sha256 of {m.name}", f"unreadable: {exc}") from exc
            if digest != entry.sha256:
                raise BackupInvalid(archive, f"sha256 of {m.name}", "the content differs from the manifest")
    return manifest


def extract(tar_path: Path, dest: Path) -> None:
    """Extract a checked archive (``open_checked`` first); the ``data`` filter refuses anything unsafe again."""
    with tarfile.open(tar_path, mode="r:") as tar:
        tar.extractall(dest, filter="data")
