"""The bytes of every ingested file, kept content-addressed so a chunker or model upgrade can re-index.

Why content-addressed: the same file uploaded to two knowledge bases (or twice) is stored once, a
digest names it on every backend alike, and a copy is verified by reading it back. ``OriginalStore``
is the one interface ingestion and re-indexing use; the embedded default keeps the files under
``<data dir>/originals/<sha256[:2]>/<sha256>`` (``FilesystemOriginalStore``), and the scaled mode an
S3-compatible object store behind the same five methods (``knowledge.s3_originals``), chosen by
``originals.backend`` in ``build_original_store``.

A write goes to a temporary name in the same directory, is fsynced, renamed over the final name and
the directory fsynced: a crash leaves either no file or the whole file, never a torn one.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from ragvigil.errors import RagvigilError
from ragvigil.storage.durable import fsync_dir

if TYPE_CHECKING:
    from ragvigil.config import Settings

_DIGEST = re.compile(r"[0-9a-f]{64}")
READ_BLOCK = 1 << 20


class OriginalNotStored(RagvigilError):
    """The original file could not be written (disk full, permissions): the upload stores nothing."""

    status = 507
    code = "original_not_stored"
    log_event = "original_not_stored"


class OriginalMissing(RagvigilError, LookupError):
    """No original with that digest is kept (a document stored before originals were kept, or lost)."""

    status = 404
    code = "original_missing"
    message_template = "no original file with digest {arg}"


class OriginalStore(Protocol):
    """Where the originals live: put returns the SHA-256 hex digest that names the bytes from then on."""

    def put(self, data: bytes | BinaryIO) -> str: ...

    def open(self, digest: str) -> BinaryIO: ...

    def exists(self, digest: str) -> bool: ...

    def delete(self, digest: str) -> None: ...

    def iter_digests(self) -> Iterator[str]: ...


def check_digest(digest: str) -> str:
    """A digest is a path component: anything but 64 lowercase hex characters is refused."""
    if not _DIGEST.fullmatch(digest):
        raise ValueError(f"not a SHA-256 hex digest: {digest[:80]!r}")
    return digest


class FilesystemOriginalStore:
    """Originals as files under ``root/<sha256[:2]>/<sha256>``; the same content is written once."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / digest[:2] / digest

    def put(self, data: bytes | BinaryIO) -> str:
        """Store ``data`` (bytes, or a binary stream read to its end); raises ``OriginalNotStored`` on a write error."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=".incoming-", dir=self.root)
        except OSError as exc:
            raise OriginalNotStored(f"cannot keep the original file under {self.root}: {exc.strerror}") from exc
        tmp = Path(tmp_name)
        try:
            sha = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                for block in read_blocks(data):
                    sha.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            digest = sha.hexdigest()
            final = self.path(digest)
            if final.exists():
                tmp.unlink()
                return digest
            final.parent.mkdir(exist_ok=True)
            os.replace(tmp, final)
            fsync_dir(final.parent)
            return digest
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise OriginalNotStored(f"cannot keep the original file under {self.root}: {exc.strerror}") from exc

    def open(self, digest: str) -> BinaryIO:
        try:
            return self.path(digest).open("rb")
        except FileNotFoundError:
            raise OriginalMissing(digest) from None

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def iter_digests(self) -> Iterator[str]:
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for f in sorted(sub.iterdir()):
                if _DIGEST.fullmatch(f.name) and f.name.startswith(sub.name):
                    yield f.name


def read_blocks(data: bytes | BinaryIO) -> Iterator[bytes]:
    """The bytes of ``data`` in blocks of ``READ_BLOCK`` (what every store streams a put through)."""
    if isinstance(data, bytes | bytearray | memoryview):
        yield bytes(data)
        return
    while block := data.read(READ_BLOCK):
        yield block


def read_original(store: OriginalStore, digest: str, max_bytes: int) -> bytes:
    """An original's bytes through any store, bounded by ``max_bytes``."""
    with store.open(digest) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"original {digest} has more than {max_bytes} bytes (ingest.max_file_bytes)")
    return data


def build_original_store(settings: Settings) -> OriginalStore:
    """``originals.backend``: files under ``<data dir>/originals``, or the configured S3 bucket and prefix."""
    if settings.originals.backend == "s3":
        from ragvigil.knowledge.s3_originals import S3OriginalStore

        return S3OriginalStore(settings.originals, spool_dir=settings.cache_dir / "originals-spool")
    return FilesystemOriginalStore(settings.data_dir / "originals")


def describe_original_store(store: OriginalStore) -> str:
    """Where a store keeps its originals, for messages and reports (never a credential)."""
    address = getattr(store, "address", None)
    if isinstance(address, str):
        return address
    root = getattr(store, "root", None)
    return str(root) if root is not None else type(store).__name__
