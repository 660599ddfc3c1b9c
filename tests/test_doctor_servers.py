"""``ragvigil doctor`` against real PostgreSQL and Redis servers on 127.0.0.1: up, at an older migration, stopped."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import redis

from ragvigil.ops.doctor import healthy, run_checks
from tests.conftest import make_settings
from tests.doctor_support import migrate_to, row
from tests.realservers import ServerUnavailable, create_database, postgres_server, redis_server


def _unavailable(exc: ServerUnavailable) -> None:
    if os.environ.get("CI"):
        raise exc
    pytest.skip(str(exc))


def test_postgresql_at_an_older_migration_names_the_missing_ones(pg_server: str, tmp_path: Path) -> None:
    url = create_database(pg_server, "doctor_" + uuid.uuid4().hex[:10])
    migrate_to(url, "0005")
    settings = make_settings(tmp_path / "data", database_url=url, database={"migrate_on_start": False})
    results = run_checks(settings)
    assert row(results, "database").status == "ok"
    schema = row(results, "database.schema")
    assert schema.status == "fail"
    assert "revision 0005" in schema.found and "0006 (document quality and quarantine)" in schema.found
    assert "0007" in schema.found and "ragvigil migrate" in schema.fix
    migrate_to(url, "head")
    assert row(run_checks(settings), "database.schema").status == "ok"


def test_a_postgresql_that_was_stopped_is_named_with_its_fix(tmp_path: Path) -> None:
    try:
        with postgres_server() as server:
            url = create_database(server, "doctor_stop")
            migrate_to(url, "head")
            settings = make_settings(tmp_path / "data", database_url=url)
            assert row(run_checks(settings), "database").status == "ok"
    except ServerUnavailable as exc:
        _unavailable(exc)
    # the server is stopped now: the same settings name it and say what to do
    results = run_checks(settings, timeout_s=3)
    db = row(results, "database")
    port = url.rsplit(":", 1)[1].split("/")[0]
    assert db.status == "fail" and f"127.0.0.1:{port}/doctor_stop unreachable" in db.found
    assert f"start the database server at 127.0.0.1:{port}" in db.fix
    assert not healthy(results)


def test_redis_up_evicting_and_down(tmp_path: Path) -> None:
    settings_dir = tmp_path / "data"
    try:
        with redis_server() as server:
            settings = make_settings(settings_dir, redis={"url": server.url})
            migrate_to(settings.db_url, "head")
            results = run_checks(settings)
            up = row(results, "redis")
            assert up.status == "ok" and f"127.0.0.1:{server.port}/0 reachable, PING" in up.found
            assert row(results, "redis.eviction").status == "ok"
            client = redis.Redis.from_url(server.url)
            client.config_set("maxmemory", "64mb")
            client.config_set("maxmemory-policy", "allkeys-lru")
            client.close()
            evicting = row(run_checks(settings), "redis.eviction")
            assert evicting.status == "warn" and "allkeys-lru" in evicting.found and "noeviction" in evicting.fix
            server.stop()
            down = row(run_checks(settings, timeout_s=2), "redis")
            assert down.status == "fail" and f"127.0.0.1:{server.port}/0 unreachable" in down.found
            assert "start Redis" in down.fix
            server.start()
            assert row(run_checks(settings), "redis").status == "ok"
    except ServerUnavailable as exc:
        _unavailable(exc)
