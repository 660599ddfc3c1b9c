"""An instance whose originals are in a real S3-compatible object store (SeaweedFS started in the test run):
uploads keep them there, an outage refuses uploads with a 503 and stores nothing, reindex reads them back,
and a backup holds them, verifies and restores them into an object store or an embedded data dir."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.knowledge.originals import FilesystemOriginalStore
from ragvigil.knowledge.s3_originals import S3OriginalStore
from ragvigil.ops.backup import create_backup, restore_backup, verify_backup
from ragvigil.ops.backup.manifest import BackupManifest
from ragvigil.storage.models import Document
from tests.conftest import local_client, make_settings
from tests.realservers import SeaweedServer

KB = "help"
REFUND = b"# Refunds\n\nA refund reaches the card it was paid with within five working days.\n"
INVOICE = b"# Invoices\n\nInvoices are sent to the billing e-mail address on the first of every month.\n"


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def s3(server: SeaweedServer, prefix: str | None = None) -> dict[str, Any]:
    return {
        "backend": "s3",
        "s3_endpoint": server.url,
        "bucket": server.bucket,
        "prefix": prefix or f"i{secrets.token_hex(4)}/",  # each instance its own prefix in the module's bucket
        "access_key": server.access_key,
        "secret_key": server.secret_key,
        "connect_timeout_s": 1.0,
        "read_timeout_s": 5.0,
        "retries": 0,
    }


def instance(data_dir: Path, originals: dict[str, Any] | None = None) -> Runtime:
    extra = {"originals": originals} if originals else {}
    return Runtime(make_settings(data_dir, background_embedding=False, **extra))


@pytest.fixture
def runtime(tmp_path: Path, seaweedfs: SeaweedServer) -> Iterator[Runtime]:
    rt = instance(tmp_path / "data", s3(seaweedfs))
    yield rt
    rt.close()


@pytest.fixture
def api(runtime: Runtime) -> Iterator[TestClient]:
    with local_client(create_app(runtime=runtime)) as c:
        yield c


def upload(api: TestClient, name: str, raw: bytes) -> Any:
    return api.post(f"/api/v1/kb/{KB}/documents", files=[("file", (name, raw, "text/markdown"))])


def test_uploads_keep_their_originals_in_the_object_store_not_the_data_dir(api: TestClient, runtime: Runtime) -> None:
    r = upload(api, "refunds.md", REFUND)
    assert r.status_code == 201, r.text
    store = runtime.ingestor.originals
    assert isinstance(store, S3OriginalStore)
    assert list(store.iter_digests()) == [sha(REFUND)]
    assert not (runtime.settings.data_dir / "originals").exists()
    doc_id = r.json()[0]["document_id"]
    with runtime.db.session() as s:
        assert s.get(Document, doc_id).original_digest == sha(REFUND)
    assert upload(api, "refunds.md", INVOICE).status_code == 201  # replaced: the old original is collected
    assert list(store.iter_digests()) == [sha(INVOICE)]


def test_an_object_store_outage_refuses_the_upload_with_a_503_and_stores_nothing(
    api: TestClient, runtime: Runtime, seaweedfs: SeaweedServer
) -> None:
    seaweedfs.stop()
    try:
        r = upload(api, "refunds.md", REFUND)
    finally:
        seaweedfs.start()
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "object_store_unavailable"
    assert r.headers.get("retry-after")
    with runtime.db.session() as s:
        assert s.scalars(select(Document)).all() == []  # no document row without its original
    assert list(runtime.ingestor.originals.iter_digests()) == []
    assert upload(api, "refunds.md", REFUND).status_code == 201  # the server back: the same upload works


def test_a_wrong_secret_refuses_the_upload_with_its_own_code(tmp_path: Path, seaweedfs: SeaweedServer) -> None:
    rt = instance(tmp_path / "data", {**s3(seaweedfs), "secret_key": "not-the-secret"})
    try:
        with local_client(create_app(runtime=rt)) as c:
            r = upload(c, "refunds.md", REFUND)
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "object_store_refused"
        assert "not-the-secret" not in r.text
        with rt.db.session() as s:
            assert s.scalars(select(Document)).all() == []
    finally:
        rt.close()


def test_reindex_reads_the_originals_from_the_object_store(runtime: Runtime, seaweedfs: SeaweedServer) -> None:
    for name, raw in (("refunds.md", REFUND), ("invoices.md", INVOICE)):
        assert runtime.ingestor.ingest_bytes(KB, name, raw).outcome == "created"
    gets: list[str] = []
    store = runtime.ingestor.originals
    store.client.meta.events.register(
        "provide-client-params.s3.GetObject", lambda params, **kw: gets.append(params["Key"])
    )
    status = runtime.reindexer.run(KB, runtime.reindexer.begin(KB, "test"))
    assert (status.state, status.done, status.skipped, status.failed) == ("done", 2, 0, 0), status.errors
    assert sorted(gets) == sorted(store.key(sha(raw)) for raw in (REFUND, INVOICE))
    store.delete(sha(INVOICE))  # an original lost from the bucket: that document is skipped, the other rebuilt
    status = runtime.reindexer.run(KB, runtime.reindexer.begin(KB, "test"))
    assert (status.done, status.skipped) == (2, 1)
    assert "invoices.md" in status.errors[0]


def test_a_reindex_while_the_store_is_down_fails_and_the_old_generation_keeps_serving(
    runtime: Runtime, seaweedfs: SeaweedServer
) -> None:
    from ragvigil.knowledge.s3_originals import ObjectStoreUnavailable
    from ragvigil.storage.models import Chunk

    assert runtime.ingestor.ingest_bytes(KB, "refunds.md", REFUND).outcome == "created"
    with runtime.db.session() as s:
        before = sorted(s.scalars(select(Chunk.id)).all())
    job = runtime.reindexer.begin(KB, "test")
    seaweedfs.stop()
    try:
        with pytest.raises(ObjectStoreUnavailable):
            runtime.reindexer.run(KB, job)
    finally:
        seaweedfs.start()
    assert runtime.reindexer.status(KB).state == "failed"
    with runtime.db.session() as s:
        assert sorted(s.scalars(select(Chunk.id)).all()) == before  # nothing staged left, nothing switched


def test_backup_verify_and_restore_round_trip_with_the_originals_in_the_object_store(
    runtime: Runtime, seaweedfs: SeaweedServer, tmp_path: Path
) -> None:
    for name, raw in (("refunds.md", REFUND), ("invoices.md", INVOICE)):
        assert runtime.ingestor.ingest_bytes(KB, name, raw).outcome == "created"
    (runtime.settings.data_dir / "originals").mkdir()  # a leftover of an embedded past is not what is backed up
    (runtime.settings.data_dir / "originals" / "stray").write_bytes(b"not an original")
    result = create_backup(runtime.settings, tmp_path / "backups", flush_vectors=runtime.vectors.flush)
    m: BackupManifest = result.manifest
    assert (m.originals, m.originals_backend) == (2, "s3")
    assert {n for n in m.files if n.startswith("data/originals/")} == {
        f"data/originals/{sha(raw)[:2]}/{sha(raw)}" for raw in (REFUND, INVOICE)
    }
    report = verify_backup(result.path, runtime.settings, write_record=False)
    assert report.ok, report.error
    assert any(c.startswith("originals match (2") for c in report.checks)

    # into another instance with an object store (a fresh prefix): the originals land there, not on disk
    target = s3(seaweedfs)
    restored = restore_backup(result.path, make_settings(tmp_path / "restored-s3", originals=target))
    assert restored.originals == 2 and restored.originals_into.startswith(f"s3://{seaweedfs.bucket}/{target['prefix']}")
    assert not (tmp_path / "restored-s3" / "originals").exists()
    rt = instance(tmp_path / "restored-s3", target)
    try:
        assert sorted(rt.ingestor.originals.iter_digests()) == sorted(sha(r) for r in (REFUND, INVOICE))
        status = rt.reindexer.run(KB, rt.reindexer.begin(KB, "test"))
        assert (status.done, status.skipped, status.failed) == (2, 0, 0), status.errors
    finally:
        rt.close()

    # into an embedded instance: the originals are files of its data dir, where its store reads them
    embedded = restore_backup(result.path, make_settings(tmp_path / "restored-fs"))
    assert embedded.originals == 2
    store = FilesystemOriginalStore(tmp_path / "restored-fs" / "originals")
    assert sorted(store.iter_digests()) == sorted(sha(r) for r in (REFUND, INVOICE))
    with store.open(sha(REFUND)) as f:
        assert f.read() == REFUND


def test_a_backup_refuses_to_finish_without_the_originals_when_the_store_is_down(
    runtime: Runtime, seaweedfs: SeaweedServer, tmp_path: Path
) -> None:
    from ragvigil.ops.backup import BackupError

    assert runtime.ingestor.ingest_bytes(KB, "refunds.md", REFUND).outcome == "created"
    seaweedfs.stop()
    try:
        with pytest.raises(BackupError, match="originals not copied"):
            create_backup(runtime.settings, tmp_path / "backups")
    finally:
        seaweedfs.start()
    assert not any((tmp_path / "backups").glob("*.tar*"))  # no backup that silently lacks them


def test_a_restore_into_an_unreachable_store_leaves_the_target_untouched(
    runtime: Runtime, seaweedfs: SeaweedServer, tmp_path: Path
) -> None:
    from ragvigil.ops.backup import BackupError

    assert runtime.ingestor.ingest_bytes(KB, "refunds.md", REFUND).outcome == "created"
    result = create_backup(runtime.settings, tmp_path / "backups")
    bad = {**s3(seaweedfs), "bucket": f"absent-{secrets.token_hex(4)}"}
    with pytest.raises(BackupError, match="not put back"):
        restore_backup(result.path, make_settings(tmp_path / "restored", originals=bad))
    assert not (tmp_path / "restored").exists() or not any((tmp_path / "restored").iterdir())


def test_a_filesystem_backup_counts_its_originals_and_verify_catches_a_miscount(tmp_path: Path) -> None:
    rt = instance(tmp_path / "data")
    try:
        assert rt.ingestor.ingest_bytes(KB, "refunds.md", REFUND).outcome == "created"
        result = create_backup(rt.settings, tmp_path / "backups")
    finally:
        rt.close()
    assert (result.manifest.originals, result.manifest.originals_backend) == (1, "filesystem")
    assert f"data/originals/{sha(REFUND)[:2]}/{sha(REFUND)}" in result.manifest.files

    from ragvigil.ops.backup import originals

    wrong = BackupManifest(**{**result.manifest.__dict__, "originals": 2})
    with pytest.raises(Exception, match="originals count"):
        originals.check(result.path, wrong)


def test_doctor_checks_the_object_store_and_round_trips_only_with_probe(
    seaweedfs: SeaweedServer, tmp_path: Path
) -> None:
    from ragvigil.ops.doctor import run_checks
    from tests.doctor_support import row

    target = s3(seaweedfs)
    settings = make_settings(tmp_path / "data", originals=target)
    patient = 60.0  # each group runs under doctor.timeout_s; a busy test machine must not make it the finding
    results = run_checks(settings, timeout_s=patient)
    assert row(results, "originals").status == "ok", row(results, "originals")
    assert seaweedfs.bucket in row(results, "originals").found
    assert row(results, "originals.round_trip").status == "skipped"
    listed = seaweedfs.client().list_objects_v2(Bucket=seaweedfs.bucket, Prefix=target["prefix"])
    assert listed.get("KeyCount", 0) == 0  # read-only without --probe

    probed = run_checks(settings, probe=True, timeout_s=patient)
    assert row(probed, "originals.round_trip").status == "ok", row(probed, "originals.round_trip")
    listed = seaweedfs.client().list_objects_v2(Bucket=seaweedfs.bucket, Prefix=target["prefix"])
    assert listed.get("KeyCount", 0) == 0  # the probe object is gone again

    wrong = make_settings(tmp_path / "data", originals={**target, "secret_key": "not-the-secret"})
    refused = row(run_checks(wrong, timeout_s=patient), "originals")
    assert refused.status == "fail" and "credentials" in refused.found and "SECRET_KEY" in refused.fix, refused
    no_bucket = make_settings(tmp_path / "data", originals={**target, "bucket": f"absent-{secrets.token_hex(4)}"})
    missing = row(run_checks(no_bucket, timeout_s=patient), "originals")
    assert missing.status == "fail" and "does not exist" in missing.found, missing

    seaweedfs.stop()
    try:
        down = row(run_checks(settings, timeout_s=3.0), "originals")
    finally:
        seaweedfs.start()
    assert down.status == "fail" and "unreachable" in down.found, down


def test_doctor_checks_the_filesystem_originals_of_an_embedded_instance(tmp_path: Path) -> None:
    from ragvigil.ops.doctor import run_checks
    from tests.doctor_support import row

    settings = make_settings(tmp_path / "data")
    assert "not made yet" in row(run_checks(settings), "originals").found
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "originals").write_bytes(b"")  # a file where the directory must be
    assert row(run_checks(settings), "originals").status == "fail"
