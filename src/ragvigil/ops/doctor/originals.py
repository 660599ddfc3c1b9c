"""The originals group: where every ingested file's bytes are kept is usable.

Filesystem (the default): ``<data dir>/originals`` readable and writable. An object store backend brings
its own check through ``register_originals_check`` (the style of ``vectors.register_vector_server_check``);
the S3 one is registered below: the endpoint answers, the credentials are accepted and the bucket exists,
and only with ``--probe`` a put/get/delete round trip through the store itself (a few random bytes under
their own digest, removed at once), since a doctor run is otherwise read-only.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable

from ragvigil.config import Settings
from ragvigil.errors import RagvigilError
from ragvigil.ops.doctor.options import DoctorOptions
from ragvigil.ops.doctor.result import CheckResult, fail, ok, skipped

OriginalsCheck = Callable[[Settings, DoctorOptions], list[CheckResult]]
# the extension point: backend name (``originals.backend``) -> its check; filesystem is this module's own
ORIGINALS_CHECKS: dict[str, OriginalsCheck] = {}  # filled below
NAME = "originals"


def register_originals_check(backend: str, check: OriginalsCheck) -> None:
    """Have ``ragvigil doctor`` run ``check`` when ``originals.backend`` is ``backend``."""
    ORIGINALS_CHECKS[backend] = check


def check_originals(settings: Settings, options: DoctorOptions) -> list[CheckResult]:
    backend = settings.originals.backend
    check = ORIGINALS_CHECKS.get(backend)
    if check is None:
        return [skipped(NAME, f"backend {backend}: no doctor check registered for it")]
    return check(settings, options)


def check_filesystem(settings: Settings, options: DoctorOptions) -> list[CheckResult]:
    root = settings.data_dir / "originals"
    fix = f"chown/chmod {root} for ragvigil's user"
    if not root.exists():
        return [ok(NAME, f"{root} not made yet (created at the first upload)")]
    if not root.is_dir() or not os.access(root, os.R_OK | os.W_OK | os.X_OK):
        return [fail(NAME, f"{root} is not a readable and writable directory", fix)]
    try:
        with tempfile.NamedTemporaryFile(dir=root, prefix=".doctor-"):
            pass
    except OSError as exc:
        return [fail(NAME, f"{root} is not writable: {exc}", fix)]
    return [ok(NAME, f"{root} readable and writable")]


def check_s3(settings: Settings, options: DoctorOptions) -> list[CheckResult]:
    """The bucket answers with these credentials; with ``--probe`` an object written, read back and deleted."""
    from ragvigil.knowledge.s3_originals import ObjectStoreRefused, S3OriginalStore

    section = settings.originals.model_copy(
        update={
            "connect_timeout_s": min(settings.originals.connect_timeout_s, options.timeout_s),
            "read_timeout_s": min(settings.originals.read_timeout_s, options.timeout_s),
            "retries": 0,  # the doctor's deadline is per group: one try, then the row
        }
    )
    store = S3OriginalStore(section)
    where = store.address
    try:
        store.check_bucket()
    except ObjectStoreRefused as exc:
        return [fail(NAME, str(exc), "set RAGVIGIL_ORIGINALS__ACCESS_KEY/SECRET_KEY to a key the store accepts")]
    except RagvigilError as exc:
        return [fail(NAME, str(exc), "start the object store, create the bucket, or fix RAGVIGIL_ORIGINALS__*")]
    rows = [ok(NAME, f"{where}: reachable, credentials accepted, bucket exists")]
    if not options.probe:
        return [*rows, skipped(f"{NAME}.round_trip", "not run (pass --probe to write, read and delete one object)")]
    probe = b"ragvigil doctor probe " + secrets.token_bytes(16)
    try:
        digest = store.put(probe)
        try:
            with store.open(digest) as f:
                back = f.read(len(probe) + 1)
        finally:
            store.delete(digest)
        gone = not store.exists(digest)
    except RagvigilError as exc:
        return [*rows, fail(f"{NAME}.round_trip", f"{where}: {exc}", "check the object store's log and permissions")]
    if back != probe:
        return [*rows, fail(f"{NAME}.round_trip", f"{where}: the object read back differs", "check the object store")]
    if not gone:
        return [*rows, fail(f"{NAME}.round_trip", f"{where}: the probe object was not deleted", "grant delete")]
    return [*rows, ok(f"{NAME}.round_trip", f"{where}: an object written, read back and deleted")]


register_originals_check("filesystem", check_filesystem)
register_originals_check("s3", check_s3)
