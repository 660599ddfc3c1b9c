"""Leader election on a real PostgreSQL server: a session-level advisory lock on a connection of its own.

Two replicas on one database elect exactly one leader; the leader's lock connection killed → it steps down
at its next renewal and the standby takes over; a leader that stops hands over at the standby's next try.
With two whole runtimes, the scheduled backup runs on the leader only, and the standby says it stands by.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.ops import metrics
from ragvigil.ops.backup import list_backups
from ragvigil.ops.leader import Leadership
from ragvigil.ops.leader.pg_lock import PostgresLock
from tests.conftest import admin_key, local_client, make_settings
from tests.realservers import create_database, wait_until

pytestmark = pytest.mark.postgres

LEASE_S, RENEW_S = 2.0, 0.2
_counter = itertools.count()


@pytest.fixture
def db_url(pg_server: str) -> str:
    return create_database(pg_server, f"rv_leader_{os.getpid()}_{next(_counter)}")


def election(url: str, replica: str) -> Leadership:
    return Leadership(PostgresLock(url, replica, timeout_s=1.0), replica, lease_s=LEASE_S, renew_s=RENEW_S)


@pytest.fixture
def pair(db_url: str) -> Iterator[tuple[Leadership, Leadership]]:
    a, b = election(db_url, "replica-a"), election(db_url, "replica-b")
    yield a, b
    a.stop()
    b.stop()


def kill_sessions(url: str, application_name: str) -> int:
    """``pg_terminate_backend`` of every session of ``application_name``: a cut connection, from the server."""
    u = make_url(url)
    with psycopg.connect(
        host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database, autocommit=True
    ) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchall()
    return len(rows)


def leaders(*elections: Leadership) -> list[str]:
    return [e.replica for e in elections if e.is_leader()]


def test_two_replicas_elect_exactly_one_leader_and_the_standby_names_it(pair: tuple[Leadership, Leadership]) -> None:
    a, b = pair
    a.start()
    b.start()
    assert leaders(a, b) == ["replica-a"]  # the first to try takes the lock, the other cannot
    for _ in range(5):  # renewals and retries keep it that way
        a.tick()
        b.tick()
        assert leaders(a, b) == ["replica-a"]
    status = b.status()
    assert status["backend"] == "postgres" and status["leader"] is False
    assert status["leader_replica"] == "replica-a"  # read from pg_locks + pg_stat_activity
    assert a.status()["leader"] is True and a.status()["leader_replica"] == "replica-a"


def test_the_leaders_lock_connection_killed_means_the_standby_takes_over(
    pair: tuple[Leadership, Leadership], db_url: str
) -> None:
    a, b = pair
    a.start()
    b.start()
    assert leaders(a, b) == ["replica-a"]
    assert kill_sessions(db_url, "replica-a") == 1
    # the killed session released the lock on the server at once; each side finds out at its next step
    wait_until(lambda: leaders(a, b) == ["replica-b"], LEASE_S * 3, "replica-b to lead after replica-a's session died")
    assert b.status()["leader_replica"] == "replica-b"
    # the old leader stands by now (its reconnect finds the lock taken), it never leads alongside
    for _ in range(5):
        a.tick()
        assert not a.is_leader()
    assert a.changes == 2 and b.changes == 1  # a gained and lost, b gained


def test_a_leader_that_stops_hands_over_at_the_standbys_next_try(pair: tuple[Leadership, Leadership]) -> None:
    a, b = pair
    a.start()
    b.start()
    a.stop()  # unlocks and closes its session
    assert not a.is_leader()
    assert b.tick() is True  # no lease to wait for: the lock is free now
    assert leaders(a, b) == ["replica-b"]


def test_the_gauge_follows_this_replicas_leadership(pair: tuple[Leadership, Leadership], db_url: str) -> None:
    a, b = pair
    b.start()  # b leads
    gained = metrics.LEADER_CHANGES.labels("gained")._value.get()
    assert metrics.LEADER._value.get() == 1
    b.stop()
    assert metrics.LEADER._value.get() == 0
    a.start()
    assert metrics.LEADER._value.get() == 1
    assert metrics.LEADER_CHANGES.labels("gained")._value.get() == gained + 1


def replica(tmp_path: Path, name: str, db_url: str, backups: Path) -> Runtime:
    return Runtime(
        make_settings(
            tmp_path / name,
            database_url=db_url,
            background_embedding=False,
            leader={"lease_s": LEASE_S, "renew_s": RENEW_S},
            backup={"schedule": "interval", "interval_h": 24, "verify_after_create": False, "dir": str(backups)},
        )
    )


def test_the_scheduled_backup_runs_on_the_leader_only(tmp_path: Path, db_url: str) -> None:
    shared_backups = tmp_path / "backups"  # one backup.dir for the cluster, as its retention needs
    a = replica(tmp_path, "a", db_url, shared_backups)
    b = replica(tmp_path, "b", db_url, shared_backups)
    try:
        assert a.settings.leader_backend == "postgres"
        a.ingestor.ingest_bytes("default", "faq.md", b"# FAQ\n\nExport your notes from Settings.\n")
        for rt in (a, b):
            rt.leadership.start()
        assert leaders(a.leadership, b.leadership) == [a.leadership.replica]
        for rt in (a, b):
            rt.backups.start()  # the scheduler ticks at once: nothing verified yet, so a backup is due
        wait_until(lambda: any(j["status"] == "done" for j in a.backups.jobs()), 120, "the leader's scheduled backup")
        wait_until(lambda: b.backups.standby_ticks >= 1, 10, "the standby's scheduler to wake")
        assert [j["by"] for j in a.backups.jobs()] == ["scheduler"]
        assert b.backups.jobs() == []  # the standby made no job, so none claims to run
        assert len(list_backups(shared_backups)) == 1
        assert a.backups.schedule_state() == "running" and b.backups.schedule_state() == "standby"
        with local_client(create_app(runtime=b), admin_key(b)) as client:
            health = client.get("/health").json()
            assert health["leader"]["leader"] is False
            assert health["leader"]["replica"] == b.leadership.replica
            assert health["leader"]["leader_replica"] == a.leadership.replica
            assert health["leader"]["jobs"]["backup_schedule"] == "standby"
            listing = client.get("/api/v1/admin/backups").json()
            assert listing["schedule"] == "standby" and listing["jobs"] == []

        a.leadership.stop()  # the leader goes away: the standby takes the schedule over
        wait_until(b.leadership.is_leader, LEASE_S * 3, "the standby to lead")
        assert b.backups.schedule_state() == "running"
        standing_by = b.backups.standby_ticks
        for f in list_backups(shared_backups):
            f.path.unlink()  # no backup left: one is due at its next wake
        b.backups.tick()
        assert b.backups.standby_ticks == standing_by
        assert [j["by"] for j in b.backups.jobs()] == ["scheduler"]
        assert len(list_backups(shared_backups)) == 1
        asked = a.backups.run(a.backups._new_job("operator", False, False))  # asked of the old leader, now standby
        assert asked["status"] == "done" and asked["pruned"] == "standby"  # made, but the retention is b's
        assert len(list_backups(shared_backups)) == 2
    finally:
        a.close()
        b.close()
