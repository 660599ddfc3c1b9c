"""Originals in an S3-compatible object store (scaled mode): every replica reads the bytes any replica kept.

Why an object store: replicas do not share a data dir, and a reindex or a backup run by one of them must
find every file the others ingested. The keys are ``<prefix><sha256[:2]>/<sha256>``, the layout of
``FilesystemOriginalStore``, so a backup holds them under the same member names either way.

The digest is computed while the upload is read into a spooled temporary file (memory up to
``originals.spool_memory_bytes``, then disk), so a large file never sits whole in memory and its key is
known before anything is sent. An object already under that key is not sent again. A file larger than
``originals.part_bytes`` goes up as a multipart upload, aborted on any failure: an object appears whole or
not at all. The SHA-256 is also kept as the object's ``x-amz-meta-sha256`` (an ETag is an MD5, or not even
that for a multipart object), and a read hashes the bytes as they stream: a mismatch with the key at the
end of the object raises ``OriginalCorrupt`` instead of handing back bytes that are not the original.

Failures are typed: a refused connection, a timeout, a 5xx or a missing bucket is
``ObjectStoreUnavailable`` (503, retried by the client later), refused credentials are
``ObjectStoreRefused`` (503, an operator must fix them), a missing object is ``OriginalMissing``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from ragvigil.config import OriginalsSettings, SecretUrl
from ragvigil.errors import DependencyUnavailable
from ragvigil.knowledge.originals import READ_BLOCK, OriginalMissing, OriginalNotStored, check_digest, read_blocks

_DIGEST = re.compile(r"[0-9a-f]{64}")
_AUTH_CODES = frozenset(
    {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
)
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
SHA_META = "sha256"  # x-amz-meta-sha256


class ObjectStoreUnavailable(DependencyUnavailable):
    """The object store keeping the originals does not answer (or has no such bucket): nothing is stored."""

    code = "object_store_unavailable"
    message_template = "the object store keeping the original files is unavailable; try again shortly"
    log_event = "object_store_unavailable"


class ObjectStoreRefused(ObjectStoreUnavailable):
    """The object store refused ragvigil's credentials: retrying does not help until they are fixed."""

    code = "object_store_refused"
    retry_after = 60  # every 503 says when to come back: here, after an operator had time to fix the keys
    message_template = "the object store keeping the original files refused ragvigil's credentials"
    log_event = "object_store_refused"


class OriginalCorrupt(OriginalMissing):
    """The bytes under a digest's key do not hash to it: the original is as good as lost."""

    code = "original_corrupt"
    message_template = "the original file with digest {arg} is damaged in the object store"


class S3OriginalStore:
    """``OriginalStore`` over one bucket and prefix of an S3-compatible server."""

    def __init__(self, settings: OriginalsSettings, spool_dir: Path | None = None) -> None:
        if settings.s3_endpoint is None or settings.bucket is None:
            raise ValueError("originals.s3_endpoint and originals.bucket are required with originals.backend s3")
        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = settings.prefix
        self.endpoint = SecretUrl(settings.s3_endpoint.get_secret_value()).masked()  # shown: no credential
        self.spool_dir = spool_dir
        secret = settings.secret_key.get_secret_value()
        self.client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint.get_secret_value(),
            region_name=settings.region,
            aws_access_key_id=settings.access_key.get_secret_value() or None,
            aws_secret_access_key=secret or None,
            config=Config(
                connect_timeout=settings.connect_timeout_s,
                read_timeout=settings.read_timeout_s,
                retries={"total_max_attempts": settings.retries + 1, "mode": "standard"},
                s3={"addressing_style": settings.addressing_style},
                signature_version="s3v4",
            ),
        )

    @property
    def address(self) -> str:
        """``s3://bucket/prefix at endpoint``: what messages name (never a credential)."""
        return f"s3://{self.bucket}/{self.prefix} at {self.endpoint}"

    def key(self, digest: str) -> str:
        check_digest(digest)
        return f"{self.prefix}{digest[:2]}/{digest}"

    # --- the OriginalStore protocol -------------------------------------------------------------------

    def put(self, data: bytes | BinaryIO) -> str:
        """Store ``data``; the same bytes are sent once. Raises ``ObjectStoreUnavailable``/``OriginalNotStored``."""
        limit = self.settings.spool_memory_bytes
        spool_dir = None if self.spool_dir is None else str(self.spool_dir)
        spool: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed by the with below
            max_size=limit, dir=spool_dir, prefix=".incoming-"
        )
        with spool:
            sha = hashlib.sha256()
            size = 0
            try:
                for block in read_blocks(data):
                    if size + len(block) > limit and self.spool_dir is not None:
                        self.spool_dir.mkdir(parents=True, exist_ok=True)  # only once it goes to disk
                    sha.update(block)
                    spool.write(block)
                    size += len(block)
            except OSError as exc:
                raise OriginalNotStored(f"cannot spool the original file for {self.address}: {exc.strerror}") from exc
            digest = sha.hexdigest()
            if self.exists(digest):
                return digest
            spool.seek(0)
            key = self.key(digest)
            with self._mapped("keep the original", digest, missing=OriginalNotStored):
                if size <= self.settings.part_bytes:
                    self.client.put_object(
                        Bucket=self.bucket,
                        Key=key,
                        Body=spool.read(),
                        Metadata={SHA_META: digest},
                        ContentType="application/octet-stream",
                    )
                else:
                    self._multipart(key, digest, spool)
        return digest

    def open(self, digest: str) -> BinaryIO:
        key = self.key(digest)
        with self._mapped("read the original", digest, missing=OriginalMissing):
            answer = self.client.get_object(Bucket=self.bucket, Key=key)
        meta = (answer.get("Metadata") or {}).get(SHA_META)
        if meta is not None and meta != digest:
            answer["Body"].close()
            raise OriginalCorrupt(digest)
        return io.BufferedReader(_VerifyingReader(answer["Body"], digest, self), READ_BLOCK)  # type: ignore[return-value]

    def exists(self, digest: str) -> bool:
        key = self.key(digest)
        try:
            with self._mapped("look up the original", digest, missing=OriginalMissing):
                self.client.head_object(Bucket=self.bucket, Key=key)
        except OriginalMissing:
            return False
        return True

    def delete(self, digest: str) -> None:
        key = self.key(digest)
        with self._mapped("delete the original", digest, missing=None):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def iter_digests(self) -> Iterator[str]:
        """Every digest under the prefix, in key order; other keys (a probe, a stray upload) are ignored."""
        paginator = self.client.get_paginator("list_objects_v2")
        with self._mapped("list the originals", "", missing=None):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", []):
                    rest = item["Key"][len(self.prefix) :]
                    sub, _, name = rest.partition("/")
                    if _DIGEST.fullmatch(name) and name.startswith(sub) and len(sub) == 2:
                        yield name

    # --- beyond the protocol: what doctor asks ---------------------------------------------------------

    def check_bucket(self) -> None:
        """The server answers, the credentials are accepted and the bucket exists; raises otherwise."""
        with self._mapped("reach the bucket", "", missing=None):
            self.client.head_bucket(Bucket=self.bucket)

    # --- internals -----------------------------------------------------------------------------------

    def _multipart(self, key: str, digest: str, spool: IO[bytes]) -> None:
        started = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key, Metadata={SHA_META: digest}, ContentType="application/octet-stream"
        )
        upload_id = started["UploadId"]
        parts = []
        try:
            number = 1
            while block := spool.read(self.settings.part_bytes):
                sent = self.client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=block
                )
                parts.append({"PartNumber": number, "ETag": sent["ETag"]})
                number += 1
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            # best effort: the parts of an aborted upload are not an object, only space
            with contextlib.suppress(BotoCoreError, ClientError):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise

    def _mapped(self, doing: str, digest: str, missing: type[Exception] | None) -> _ErrorMap:
        return _ErrorMap(self, doing, digest, missing)


class _ErrorMap:
    """Turns botocore's errors into ragvigil's: the one place that reads their codes."""

    def __init__(self, store: S3OriginalStore, doing: str, digest: str, missing: type[Exception] | None) -> None:
        self.store, self.doing, self.digest, self.missing = store, doing, digest, missing

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc is None:
            return False
        where = self.store.address
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in _AUTH_CODES or status == 403:
                raise ObjectStoreRefused(
                    f"{where} refused the credentials ({code}) when asked to {self.doing}: "
                    "check originals.access_key and originals.secret_key"
                ) from exc
            if code == "NoSuchBucket" or (status == 404 and self.missing is None):
                raise ObjectStoreUnavailable(
                    f"{where}: bucket {self.store.bucket} does not exist (create it; ragvigil never does)"
                ) from exc
            if code in _MISSING_CODES and self.missing is OriginalMissing:
                raise OriginalMissing(self.digest) from exc
            if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"):
                raise ObjectStoreUnavailable(f"{where} failed to {self.doing}: {code}") from exc
            if self.missing is OriginalNotStored:
                raise OriginalNotStored(
                    f"{where} refused to {self.doing} ({code}): {error.get('Message', '')}"
                ) from exc
            raise ObjectStoreUnavailable(f"{where} failed to {self.doing}: {code} {error.get('Message', '')}") from exc
        if isinstance(exc, NoCredentialsError):
            raise ObjectStoreRefused(f"{where}: no credentials (set originals.access_key and secret_key)") from exc
        if isinstance(exc, BotoCoreError):
            raise ObjectStoreUnavailable(f"{where} unreachable when asked to {self.doing}: {exc}") from exc
        return False


class _VerifyingReader(io.RawIOBase):
    """An object's body that hashes what it hands out and, at its end, compares the hash with the key."""

    def __init__(self, body: Any, digest: str, store: S3OriginalStore) -> None:
        self.body, self.digest, self.store = body, digest, store
        self.sha = hashlib.sha256()
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.done:
            return 0
        with _ErrorMap(self.store, "read the original", self.digest, OriginalMissing):
            data = self.body.read(len(buffer))
        if not data:
            self.done = True
            if self.sha.hexdigest() != self.digest:
                raise OriginalCorrupt(self.digest)
            return 0
        self.sha.update(data)
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self.body.close()
        super().close()
