"""``ragvigil doctor`` against real SQLite databases, files, sockets and thresholds (no server needed)."""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import faiss
import numpy as np
import pytest
from sqlalchemy import create_engine, insert
from typer.testing import CliRunner

from ragvigil.cli import app
from ragvigil.config import Settings
from ragvigil.ops.doctor import healthy, run_checks
from ragvigil.ops.doctor import runner as doctor_runner
from ragvigil.ops.doctor.backups import check_backups
from ragvigil.ops.doctor.options import DoctorOptions
from ragvigil.ops.doctor.result import ok
from ragvigil.ops.doctor.vectors import VECTOR_SERVER_CHECKS, check_vectors, register_vector_server_check
from ragvigil.storage.models import Chunk, Document, KnowledgeBase
from ragvigil.storage.schema import head_revision
from tests.conftest import make_settings
from tests.doctor_support import migrate_to, row, rows, stamp_unknown
from tests.realservers import free_port

HEAD = head_revision()


def migrated(tmp_path: Path, revision: str = HEAD, **overrides: object) -> Settings:
    settings = make_settings(tmp_path / "data", **overrides)
    migrate_to(settings.db_url, revision)
    return settings


def test_a_migrated_data_dir_is_healthy_and_exits_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = migrated(tmp_path)
    results = run_checks(settings)
    assert row(results, "database").status == "ok"
    assert row(results, "database.schema").status == "ok"
    assert healthy(results), [r for r in results if r.status == "fail"]
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(settings.data_dir))
    out = CliRunner().invoke(app, ["doctor", "--json"])
    assert out.exit_code == 0, out.output
    body = json.loads(out.stdout)
    assert body["healthy"] is True
    assert {"check": "database.schema", "status": "ok"}.items() <= next(
        c for c in body["checks"] if c["check"] == "database.schema"
    ).items()


def test_an_older_schema_names_the_missing_migrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = migrated(tmp_path, "0005")
    schema = row(run_checks(settings), "database.schema")
    assert schema.status == "warn"  # migrate_on_start applies them at the next start
    assert "0006" in schema.found and "0007" in schema.found and "0005" in schema.found
    assert "ragvigil migrate" in schema.fix
    strict = settings.model_copy(update={"database": settings.database.model_copy(update={"migrate_on_start": False})})
    schema = row(run_checks(strict), "database.schema")
    assert schema.status == "fail" and "0006 (document quality and quarantine)" in schema.found
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("RAGVIGIL_DATABASE__MIGRATE_ON_START", "false")
    out = CliRunner().invoke(app, ["doctor"], env={"COLUMNS": "250"})
    assert out.exit_code == 1, out.output
    assert "0006" in out.stdout and "ragvigil migrate" in out.stdout


def test_a_newer_schema_says_upgrade_ragvigil(tmp_path: Path) -> None:
    settings = migrated(tmp_path)
    stamp_unknown(settings.db_url, "0099")
    schema = row(run_checks(settings), "database.schema")
    assert schema.status == "fail"
    assert "0099" in schema.found and "database is newer than this ragvigil: upgrade ragvigil" in schema.found


def test_an_unreachable_database_is_named_without_its_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql+psycopg://ragvigil:hunter2secret@127.0.0.1:{port}/ragvigil"
    settings = make_settings(tmp_path / "data", database_url=url)
    results = run_checks(settings, timeout_s=3)
    db = row(results, "database")
    assert db.status == "fail"
    assert f"127.0.0.1:{port}/ragvigil" in db.found and "unreachable" in db.found
    assert f"start the database server at 127.0.0.1:{port}" in db.fix
    assert all("hunter2secret" not in r.found + r.fix for r in results)
    assert not healthy(results)
    monkeypatch.setenv("RAGVIGIL_DATABASE_URL", url)
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(tmp_path / "data"))
    out = CliRunner().invoke(app, ["doctor", "--timeout", "3"], env={"COLUMNS": "250"})
    assert out.exit_code == 1
    assert f"127.0.0.1:{port}/ragvigil unreachable" in out.stdout and "start the database server" in out.stdout
    assert "hunter2secret" not in out.output


def test_disk_thresholds_come_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = migrated(tmp_path)
    assert row(run_checks(settings), "disk").status == "ok"
    tight = settings.model_copy(update={"doctor": settings.doctor.model_copy(update={"disk_warn_mb": 10**9})})
    disk = row(run_checks(tight), "disk")
    assert disk.status == "warn" and "MB free" in disk.found and disk.fix
    full = settings.model_copy(update={"doctor": settings.doctor.model_copy(update={"disk_fail_mb": 10**9})})
    disk = row(run_checks(full), "disk")
    assert disk.status == "fail" and "below 1000000000 MB" in disk.found
    assert row(run_checks(full), "disk.writable").status == "ok"
    # warnings alone exit 0, --strict makes them a failure
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("RAGVIGIL_DOCTOR__DISK_WARN_MB", str(10**9))
    assert CliRunner().invoke(app, ["doctor", "--json"]).exit_code == 0
    assert CliRunner().invoke(app, ["doctor", "--json", "--strict"]).exit_code == 1
    monkeypatch.setenv("RAGVIGIL_DOCTOR__DISK_FAIL_MB", str(10**9))
    assert CliRunner().invoke(app, ["doctor", "--json"]).exit_code == 1


def test_admin_key_file_permissions_and_missing_admin_key(tmp_path: Path) -> None:
    settings = migrated(tmp_path, auth_required=True, first_start_admin_key=False)
    results = run_checks(settings)
    assert row(results, "keys.admin").status == "fail"
    assert "ragvigil keys create" in row(results, "keys.admin").fix
    key = settings.data_dir / "admin.key"
    key.write_text("rv_x\n")
    key.chmod(0o644)
    file_row = row(run_checks(settings), "keys.file")
    assert file_row.status == "fail" and "world-readable" in file_row.found and "chmod 600" in file_row.fix
    key.chmod(0o600)
    assert row(run_checks(settings), "keys.file").status == "ok"


def test_a_default_secret_is_reported(tmp_path: Path) -> None:
    channel = {"name": "ops", "type": "dingtalk", "url": "https://oapi.example.invalid/robot?x=1", "secret": "changeme"}
    settings = migrated(tmp_path, alerts={"channels": [channel]})
    secret = row(run_checks(settings), "keys.secret[alerts.channels[ops].secret]")
    assert secret.status == "warn" and "well-known default" in secret.found


def test_channels_parse_and_probe(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    closed = free_port()
    try:
        up = {"name": "up", "type": "webhook", "url": f"http://127.0.0.1:{listener.getsockname()[1]}/hook"}
        down = {"name": "down", "type": "webhook", "url": f"http://127.0.0.1:{closed}/hook"}
        bad = {"name": "bad", "type": "slack", "url": "ftp://files.example.invalid/x"}
        mail = {"name": "mail", "type": "email"}
        settings = migrated(tmp_path, alerts={"channels": [up, down, bad, mail]})
        plain = run_checks(settings)
        assert row(plain, "channels[up]").status == "ok" and "not probed" in row(plain, "channels[up]").found
        assert row(plain, "channels[down]").status == "ok"  # only parsed without --probe
        assert row(plain, "channels[bad]").status == "fail" and "ftp" in row(plain, "channels[bad]").found
        assert row(plain, "channels[mail]").status == "fail" and "smtp_host" in row(plain, "channels[mail]").found
        probed = run_checks(settings, probe=True, timeout_s=3)
        assert row(probed, "channels[up]").status == "ok" and "accepts connections" in row(probed, "channels[up]").found
        assert (
            row(probed, "channels[down]").status == "fail"
            and f"127.0.0.1:{closed}" in row(probed, "channels[down]").found
        )
    finally:
        listener.close()


def _kb_with_chunks(settings: Settings, chunk_ids: list[int]) -> None:
    engine = create_engine(settings.db_url)
    with engine.begin() as conn:
        conn.execute(insert(KnowledgeBase).values(id=1, name="faq"))
        conn.execute(insert(Document).values(id="d1", kb_id=1, source="a.md"))
        for cid in chunk_ids:
            conn.execute(insert(Chunk).values(id=cid, document_id="d1", kb_id=1, ordinal=cid, text="t", embedded=True))
    engine.dispose()


def _index(settings: Settings, ids: list[int]) -> None:
    settings.index_dir.mkdir(parents=True, exist_ok=True)
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(384))
    index.add_with_ids(np.ones((len(ids), 384), dtype="float32"), np.array(ids, dtype="int64"))
    faiss.write_index(index, str(settings.index_dir / "faq.flat.faiss"))


def test_vector_index_drift_is_a_warning(tmp_path: Path) -> None:
    settings = migrated(tmp_path)
    _kb_with_chunks(settings, [1, 2, 3])
    _index(settings, [1, 2, 3])
    results = run_checks(settings)
    assert row(results, "vector_store").status == "ok"
    assert row(results, "vector_store.index[faq]").status == "ok"
    _index(settings, [1, 2, 9])  # chunk 3's vector lost, 9 an orphan
    drift = row(run_checks(settings), "vector_store.index[faq]")
    assert drift.status == "warn" and "1 missing, 1 orphan" in drift.found and "resync" in drift.fix


def test_an_unwritable_index_directory_fails(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    settings = migrated(tmp_path)
    settings.index_dir.mkdir(parents=True)
    settings.index_dir.chmod(0o500)
    try:
        store = row(run_checks(settings), "vector_store")
        assert store.status == "fail" and "not writable" in store.found
    finally:
        settings.index_dir.chmod(0o700)


def test_a_vector_server_backend_uses_its_registered_check(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = SimpleNamespace(vector_store=SimpleNamespace(backend="elsewhere", url="http://127.0.0.1:1"))
    options = DoctorOptions()
    assert check_vectors(settings, options)[0].status == "skipped"  # type: ignore[arg-type]
    assert "chroma" in VECTOR_SERVER_CHECKS  # the one server backend there is brings its check
    monkeypatch.setitem(
        VECTOR_SERVER_CHECKS, "elsewhere", lambda s, o: [ok("vector_store", f"elsewhere at {s.vector_store.url}")]
    )
    assert check_vectors(settings, options) == [ok("vector_store", "elsewhere at http://127.0.0.1:1")]  # type: ignore[arg-type]
    register_vector_server_check("other", lambda s, o: [])
    assert "other" in VECTOR_SERVER_CHECKS
    VECTOR_SERVER_CHECKS.pop("other")


def test_backup_age_against_the_schedule(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    options = DoctorOptions()
    now = datetime(2026, 1, 2, 12, tzinfo=UTC)
    # the backup package's own clock: an empty backup dir has no verified backup
    unscheduled = check_backups(settings, options)
    assert unscheduled[0].status == "warn" and "not scheduled" in unscheduled[0].found
    daily = make_settings(tmp_path / "data", backup={"schedule": "daily", "grace_h": 2})
    assert check_backups(daily, options)[0].status == "fail"
    # a daily schedule allows one day plus its grace; unscheduled, the doctor's own bound (26 h)
    aged = lambda h: lambda s: now - timedelta(hours=h)  # noqa: E731
    late = check_backups(daily, options, clock=aged(27), now=lambda: now)
    assert late[0].status == "fail" and "27.0 h old" in late[0].found and "26 h" in late[0].found
    assert check_backups(daily, options, clock=aged(25), now=lambda: now)[0].status == "ok"
    old = check_backups(settings, options, clock=aged(50), now=lambda: now)
    assert old[0].status == "warn" and "50.0 h old" in old[0].found
    assert check_backups(settings, options, clock=aged(2), now=lambda: now)[0].status == "ok"


def test_a_hung_check_costs_its_row_not_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = migrated(tmp_path)
    monkeypatch.setitem(doctor_runner.GROUPS, "stuck", lambda s, o: time.sleep(30) or [])
    results = run_checks(settings, timeout_s=0.2)
    stuck = row(results, "stuck")
    assert stuck.status == "fail" and "no answer within" in stuck.found
    assert row(results, "database").status == "ok"


def test_models_files_and_deep_load(tmp_path: Path) -> None:
    settings = migrated(tmp_path)
    assert row(run_checks(settings), "models.embedder").status == "ok"
    assert not rows(run_checks(settings), "models.embedder")[1:]
    assert row(run_checks(settings, deep=True), "models.embedder.load").status == "ok"


def test_broken_configuration_exits_with_the_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAGVIGIL_DOCTOR__TIMEOUT_S", "-1")
    out = CliRunner().invoke(app, ["doctor", "--json"])
    assert out.exit_code == 1, out.output
    body = json.loads(out.stdout)
    assert body["healthy"] is False
    (config,) = body["checks"]
    assert config["check"] == "config" and config["status"] == "fail"
    assert "RAGVIGIL_DOCTOR__TIMEOUT_S" in config["found"] and "config check" in config["fix"]


def test_an_index_of_another_kind_is_found(tmp_path: Path) -> None:
    settings = migrated(tmp_path)
    _kb_with_chunks(settings, [1, 2])
    _index(settings, [1, 2])
    (settings.index_dir / "faq.flat.faiss").rename(settings.index_dir / "faq.hnsw.faiss")  # rebuilt as HNSW
    found = row(run_checks(settings), "vector_store.index[faq]")
    assert found.status == "ok" and "faq.hnsw.faiss" in found.found
