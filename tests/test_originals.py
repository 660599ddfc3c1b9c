"""Every ingested file's bytes are kept content-addressed, recorded on its document, and removed with the
last document that references them; a failing write of the original stores nothing."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select, text
from typer.testing import CliRunner

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.cli import app as cli_app
from ragvigil.knowledge.originals import FilesystemOriginalStore, OriginalMissing, OriginalNotStored
from ragvigil.storage.db import Database, alembic_config
from ragvigil.storage.models import Document
from tests.conftest import admin_key, auth, local_client, make_settings
from tests.realservers import create_database

KB = "help"
REFUND = b"# Refunds\n\nA refund reaches the card it was paid with within five working days.\n"
INVOICE = b"# Invoices\n\nInvoices are sent to the billing e-mail address every month.\n"


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = Runtime(make_settings(tmp_path / "data", background_embedding=False))
    yield rt
    rt.close()


@pytest.fixture
def api(runtime: Runtime) -> Iterator[TestClient]:
    with local_client(create_app(runtime=runtime)) as c:
        yield c


def upload(api: TestClient, name: str, raw: bytes, kb: str = KB) -> dict:
    r = api.post(f"/api/v1/kb/{kb}/documents", files=[("file", (name, raw, "text/markdown"))])
    assert r.status_code == 201, r.text
    return r.json()[0]


def originals_dir(rt: Runtime) -> Path:
    return rt.settings.data_dir / "originals"


def stored(rt: Runtime) -> set[str]:
    return set(rt.ingestor.originals.iter_digests())


def test_the_store_names_files_by_their_digest_and_keeps_one_copy(tmp_path: Path) -> None:
    store = FilesystemOriginalStore(tmp_path / "originals")
    digest = store.put(REFUND)
    assert digest == sha(REFUND)
    assert (tmp_path / "originals" / digest[:2] / digest).read_bytes() == REFUND
    assert store.put(io.BytesIO(REFUND)) == digest  # a stream of the same content: still one file
    assert list(store.iter_digests()) == [digest]
    assert [p.name for p in (tmp_path / "originals").iterdir()] == [digest[:2]]  # no temp file left
    with store.open(digest) as f:
        assert f.read() == REFUND
    assert store.exists(digest)
    store.delete(digest)
    assert not store.exists(digest) and list(store.iter_digests()) == []
    with pytest.raises(OriginalMissing):
        store.open(digest)
    with pytest.raises(ValueError):
        store.exists("../" + digest[3:])  # a digest is a path component: nothing else is


def test_an_upload_keeps_the_original_and_the_document_says_which(api: TestClient, runtime: Runtime) -> None:
    res = upload(api, "refunds.md", REFUND)
    assert stored(runtime) == {sha(REFUND)}
    with runtime.db.session() as s:
        doc = s.get(Document, res["document_id"])
        assert (doc.original_digest, doc.original_filename, doc.original_media_type, doc.original_size) == (
            sha(REFUND),
            "refunds.md",
            "text/markdown",
            len(REFUND),
        )
    listed = api.get(f"/api/v1/kb/{KB}/documents/{res['document_id']}").json()
    assert (listed["original_digest"], listed["original_filename"]) == (sha(REFUND), "refunds.md")


def test_the_cli_ingest_keeps_the_original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "docs"
    src.mkdir()
    (src / "invoices.md").write_bytes(INVOICE)
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(tmp_path / "data"))
    out = CliRunner().invoke(cli_app, ["ingest", str(src), "--kb", KB, "--defer-vectors"])
    assert out.exit_code == 0, out.output
    digest = sha(INVOICE)
    assert (tmp_path / "data" / "originals" / digest[:2] / digest).read_bytes() == INVOICE


def test_deleting_the_last_document_of_an_original_removes_it(api: TestClient, runtime: Runtime) -> None:
    first = upload(api, "refunds.md", REFUND)
    second = upload(api, "refunds.md", REFUND, kb="other")  # the same bytes in another knowledge base
    assert stored(runtime) == {sha(REFUND)}
    key = admin_key(runtime)
    assert api.delete(f"/api/v1/kb/{KB}/documents/{first['document_id']}", headers=auth(key)).status_code == 204
    assert stored(runtime) == {sha(REFUND)}  # still referenced by the other document
    assert api.delete(f"/api/v1/kb/other/documents/{second['document_id']}", headers=auth(key)).status_code == 204
    assert stored(runtime) == set()


def test_replacing_a_document_removes_the_original_it_no_longer_uses(api: TestClient, runtime: Runtime) -> None:
    upload(api, "policy.md", REFUND)
    res = upload(api, "policy.md", INVOICE)
    assert res["outcome"] == "updated"
    assert stored(runtime) == {sha(INVOICE)}


def test_a_failing_write_of_the_original_fails_the_upload_and_stores_nothing(api: TestClient, runtime: Runtime) -> None:
    originals_dir(runtime).write_bytes(b"")  # a file where the directory must be: every write fails
    r = api.post(f"/api/v1/kb/{KB}/documents", files=[("file", ("refunds.md", REFUND, "text/markdown"))])
    assert r.status_code == 507, r.text
    assert r.json()["code"] == "original_not_stored"
    assert "original file" in r.json()["message"]
    assert api.get(f"/api/v1/kb/{KB}/documents").json() == []  # no document without its original


def test_a_failing_commit_leaves_no_original_behind(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_store(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(runtime.ingestor, "_store", broken_store)
    with pytest.raises(RuntimeError):
        runtime.ingestor.ingest_bytes(KB, "refunds.md", REFUND)
    assert stored(runtime) == set()


def test_an_unchanged_document_from_before_originals_gets_its_original(runtime: Runtime) -> None:
    res = runtime.ingestor.ingest_bytes(KB, "refunds.md", REFUND)
    runtime.ingestor.originals.delete(sha(REFUND))
    with runtime.db.session(write=True) as s:  # as a document stored before migration 0008
        doc = s.get(Document, res.document_id)
        doc.original_digest = doc.original_filename = doc.original_media_type = doc.original_size = None
    again = runtime.ingestor.ingest_bytes(KB, "refunds.md", REFUND)
    assert again.outcome == "unchanged"
    assert stored(runtime) == {sha(REFUND)}
    with runtime.db.session() as s:
        assert s.get(Document, res.document_id).original_digest == sha(REFUND)


def test_a_raising_store_is_the_upload_error(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(data: object) -> str:
        raise OriginalNotStored("cannot keep the original file: No space left on device")

    monkeypatch.setattr(runtime.ingestor.originals, "put", full)
    with pytest.raises(OriginalNotStored):
        runtime.ingestor.ingest_bytes(KB, "refunds.md", REFUND)
    with runtime.db.session() as s:
        assert s.scalars(select(Document)).all() == []


_counter = itertools.count()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rv.db'}"
    return create_database(request.getfixturevalue("pg_server"), f"rv_originals_mig_{os.getpid()}_{next(_counter)}")


def _migrate(db: Database, cfg, revision: str, down: bool = False) -> None:  # type: ignore[no-untyped-def]
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def test_migration_0008_keeps_stored_documents_and_downgrades(db_url: str) -> None:
    db = Database(db_url)
    cfg = alembic_config(db_url)
    _migrate(db, cfg, "0007")
    now = datetime.now(UTC)
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO knowledge_bases (id, name, created_at) VALUES (1, 'kb', :t)"), {"t": now})
        conn.execute(
            text(
                "INSERT INTO documents (id, kb_id, source, title, content_hash, status, vector_status, warnings, "
                "chunk_count, size_bytes, created_at, updated_at) VALUES ('d1', 1, 'a.md', 'A', 'h', 'ready', "
                "'ready', '[]', 1, 3, :t, :t)"
            ),
            {"t": now},
        )
        conn.execute(
            text(
                "INSERT INTO chunks (id, document_id, kb_id, ordinal, anchor, text, tokens, embedded) "
                "VALUES (1, 'd1', 1, 0, '', 'x', 'x', true)"
            )
        )
    _migrate(db, cfg, "0008")
    cols = {c["name"] for c in inspect(db.engine).get_columns("documents")}
    assert {"original_digest", "original_filename", "original_media_type", "original_size"} <= cols
    assert "reindex_jobs" in inspect(db.engine).get_table_names()
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT original_digest FROM documents")).scalar() is None  # reindex skips it
        assert conn.execute(text("SELECT staged_by FROM chunks")).scalar() is None  # served
    _migrate(db, cfg, "0007", down=True)
    assert "reindex_jobs" not in inspect(db.engine).get_table_names()
    assert "original_digest" not in {c["name"] for c in inspect(db.engine).get_columns("documents")}
    assert "staged_by" not in {c["name"] for c in inspect(db.engine).get_columns("chunks")}
    _migrate(db, cfg, "0008")
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0008"
        assert conn.execute(text("SELECT count(*) FROM documents")).scalar() == 1
    db.dispose()


def test_a_file_refused_by_the_upload_limits_keeps_no_original(api: TestClient, runtime: Runtime) -> None:
    runtime.ingestor.limits = runtime.ingestor.limits.model_copy(update={"max_file_bytes": 20})
    res = upload(api, "refunds.md", REFUND)
    assert res["outcome"] == "failed" and "ingest.max_file_bytes" in res["error"]
    res = upload(api, "notes.exe", b"MZ not a document")
    assert res["outcome"] == "failed"
    assert stored(runtime) == set()
