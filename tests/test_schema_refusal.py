"""A replica started against a database at an older migration refuses to serve and names the missing
migration; a database newer than the code is refused in both modes. Real ``ragvigil serve`` processes
against SQLite and a real PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

from ragvigil.app import Runtime, open_database
from ragvigil.storage.schema import SchemaRefused, SchemaWatch, engine_state, head_revision, known_revisions
from tests.conftest import local_client, make_settings
from tests.doctor_support import migrate_to, stamp_unknown
from tests.realservers import SRC, create_database, free_port, ragvigil_server

NO_MIGRATE = {"RAGVIGIL_DATABASE__MIGRATE_ON_START": "false"}


def serve_refused(data_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``ragvigil serve`` run to its end (it must exit by itself, before binding)."""
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    full_env = os.environ | {"PYTHONPATH": path, "RAGVIGIL_DATA_DIR": str(data_dir), "COLUMNS": "300"} | env
    cmd = [sys.executable, "-m", "ragvigil.cli", "serve", "--host", "127.0.0.1", "--port", str(free_port())]
    done = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    sys.stderr.write(f"--- ragvigil serve (exit {done.returncode}) ---\n{done.stdout}\n{done.stderr}\n")
    return done


def ready_body(base: str) -> dict:
    with urllib.request.urlopen(base + "/health/ready", timeout=10) as r:
        return json.loads(r.read())


def test_sqlite_behind_without_migrate_on_start_refuses_then_serves_after_migrate(tmp_path: Path) -> None:
    data = tmp_path / "data"
    url = make_settings(data).db_url
    migrate_to(url, "0005")
    done = serve_refused(data, NO_MIGRATE)
    assert done.returncode == 2
    out = done.stdout + done.stderr
    assert "refusing to start" in out and "revision 0005" in out
    assert "0006 (document quality and quarantine)" in out and "0007" in out and "ragvigil migrate" in out
    assert engine_state_of(url).current == "0005"  # nothing was migrated behind the operator's back
    migrated = subprocess.run(
        [sys.executable, "-m", "ragvigil.cli", "migrate"],
        env=os.environ | {"PYTHONPATH": str(SRC), "RAGVIGIL_DATA_DIR": str(data)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr
    with ragvigil_server(data, env=NO_MIGRATE) as server:
        schema = ready_body(server.base)["schema"]
        assert schema["state"] == "at_head" and schema["current"] == schema["head"] == head_revision()


def engine_state_of(url: str):  # type: ignore[no-untyped-def]
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        return engine_state(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize("env", [{}, NO_MIGRATE], ids=["migrate_on_start", "no_migrate"])
def test_sqlite_newer_schema_is_refused_in_both_modes(tmp_path: Path, env: dict[str, str]) -> None:
    data = tmp_path / "data"
    url = make_settings(data).db_url
    migrate_to(url, "head")
    stamp_unknown(url, "0099")
    done = serve_refused(data, env)
    assert done.returncode == 2
    out = done.stdout + done.stderr
    assert "0099" in out and "database is newer than this ragvigil: upgrade ragvigil" in out


def test_a_fresh_data_dir_still_starts_with_migrate_on_start(tmp_path: Path) -> None:
    with ragvigil_server(tmp_path / "fresh") as server:
        assert ready_body(server.base)["schema"]["state"] == "at_head"


def test_postgresql_behind_refuses_to_serve(pg_server: str, tmp_path: Path) -> None:
    url = create_database(pg_server, "refuse_" + uuid.uuid4().hex[:10])
    migrate_to(url, "0005")
    done = serve_refused(tmp_path / "data", NO_MIGRATE | {"RAGVIGIL_DATABASE_URL": url})
    assert done.returncode == 2
    out = done.stdout + done.stderr
    assert "revision 0005" in out and "0006" in out and "0007" in out and "ragvigil migrate" in out
    # the runtime itself refuses too (an app started by `uvicorn --factory` never reaches serve's check)
    settings = make_settings(tmp_path / "data", database_url=url, database={"migrate_on_start": False})
    with pytest.raises(SchemaRefused) as refused:
        open_database(settings, apply_migrations=True)
    assert [r.id for r in refused.value.state.missing] == [r.id for r in known_revisions() if r.id > "0005"]
    # with migrate_on_start (the embedded default) the same database is brought to head at start
    db = open_database(
        settings.model_copy(update={"database": settings.database.model_copy(update={"migrate_on_start": True})}), True
    )
    try:
        assert engine_state(db.engine).at_head
    finally:
        db.dispose()


def test_postgresql_newer_schema_refuses_a_replica(pg_server: str, tmp_path: Path) -> None:
    url = create_database(pg_server, "newer_" + uuid.uuid4().hex[:10])
    migrate_to(url, "head")
    stamp_unknown(url, "0099")
    done = serve_refused(tmp_path / "data", {"RAGVIGIL_DATABASE_URL": url})
    assert done.returncode == 2
    assert "upgrade ragvigil" in done.stdout + done.stderr


def test_readiness_reports_a_schema_migrated_past_this_code(empty_runtime: Runtime) -> None:
    from ragvigil.api.server import create_app

    empty_runtime.schema = SchemaWatch(empty_runtime.db.engine, ttl_s=0, wait_s=60)
    with local_client(create_app(runtime=empty_runtime, background=False)) as client:
        assert client.get("/health/ready").json()["schema"]["state"] == "at_head"
        stamp_unknown(empty_runtime.settings.db_url, "0099")  # another replica's deploy step ran a newer migration
        schema = client.get("/health/ready").json()["schema"]
    assert schema["state"] == "newer" and schema["unknown"] == "0099" and "upgrade ragvigil" in schema["message"]


def test_migrate_refuses_a_newer_schema_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from ragvigil.cli import app

    data = tmp_path / "data"
    url = make_settings(data).db_url
    migrate_to(url, "head")
    stamp_unknown(url, "0099")
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(data))
    out = CliRunner().invoke(app, ["migrate"])
    assert out.exit_code == 2, out.output
    assert "0099" in out.output and "upgrade ragvigil" in out.output
    assert engine_state_of(url).current == "0099"


def test_readiness_never_waits_for_a_hung_schema_read(tmp_path: Path) -> None:
    """A read that does not come back leaves the last state on readiness instead of holding the probe."""
    import threading

    from sqlalchemy import create_engine, event

    url = make_settings(tmp_path / "data").db_url
    migrate_to(url, "head")
    engine = create_engine(url)
    watch = SchemaWatch(engine, ttl_s=0)
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()
    try:
        assert watch.report(wait_s=60)["state"] == "at_head"  # a fresh read

        @event.listens_for(engine, "connect")
        def _hang(*_args: object) -> None:
            entered.set()
            release.wait(60)
            finished.set()

        engine.dispose()  # the next read opens a connection, which now hangs
        assert watch.report(wait_s=0.05)["state"] == "at_head"  # the last state
        assert watch.report(wait_s=0.05)["state"] == "at_head"  # one read in flight: none piles up behind it
        assert entered.wait(60)  # the read did start and is stuck in connect...
        assert not finished.is_set()  # ...and the probe answered while it still was
    finally:
        release.set()
        engine.dispose()
