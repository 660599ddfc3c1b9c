"""Leader election on a real Redis server: a lease taken with ``SET NX PX``, renewed and dropped by compare-and-set.

One leader among two; a holder paused past its lease stops believing it leads before anyone can take over,
and when it wakes up after another replica took the key it neither renews nor deletes that replica's lease;
a dead leader is replaced within about one lease; Redis gone means nobody leads. The settings choose the
backend (``auto``) and refuse one that is not configured.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import ValidationError

from ragvigil.app import Runtime
from ragvigil.config import RedisSettings
from ragvigil.ops.leader import Leadership
from ragvigil.ops.leader.redis_lease import RedisLease
from ragvigil.ops.shared.link import RedisLink
from tests.conftest import make_settings
from tests.realservers import RedisServer, ServerUnavailable, redis_server, wait_until

LEASE_S, RENEW_S = 1.0, 0.1


@pytest.fixture(scope="module")
def server(redis_srv: RedisServer) -> RedisServer:
    return redis_srv


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    return f"t{abs(hash(request.node.name)) % 10**8}:"


def election(url: str, prefix: str, replica: str) -> Leadership:
    link = RedisLink(RedisSettings(url=url, prefix=prefix, socket_timeout_ms=500, connect_timeout_ms=500))
    return Leadership(RedisLease(link, replica, lease_s=LEASE_S), replica, lease_s=LEASE_S, renew_s=RENEW_S)


@pytest.fixture
def pair(server: RedisServer, prefix: str) -> Iterator[tuple[Leadership, Leadership]]:
    a, b = election(server.url, prefix, "replica-a"), election(server.url, prefix, "replica-b")
    yield a, b
    for e in (a, b):
        e.stop()
        e.lease.link.close()  # type: ignore[attr-defined]


def leaders(*elections: Leadership) -> list[str]:
    return [e.replica for e in elections if e.is_leader()]


def test_two_replicas_elect_one_leader_named_by_the_key(
    pair: tuple[Leadership, Leadership], server: RedisServer
) -> None:
    a, b = pair
    a.start()
    b.start()
    assert leaders(a, b) == ["replica-a"]
    for _ in range(int(LEASE_S * 3 / RENEW_S)):  # across several lease lifetimes: renewed, never lost
        time.sleep(RENEW_S)
        a.tick()
        b.tick()
        assert leaders(a, b) == ["replica-a"]
    assert b.status()["leader_replica"] == "replica-a"
    key = a.lease.key  # type: ignore[attr-defined]
    ttl = redis.Redis.from_url(server.url).pttl(key)
    assert 0 < ttl <= LEASE_S * 1000


def test_a_paused_holder_steps_down_and_never_renews_the_lease_another_took(
    pair: tuple[Leadership, Leadership], server: RedisServer
) -> None:
    a, b = pair
    assert a.tick() is True  # a leads; its election thread is never started: it is "paused" from here
    assert b.tick() is False
    time.sleep(LEASE_S + 0.2)
    assert not a.is_leader()  # its own deadline passed: it stopped believing it leads before b could take over
    assert b.tick() is True  # the key expired on the server, b took it
    r = redis.Redis.from_url(server.url)
    key = a.lease.key  # type: ignore[attr-defined]
    assert r.get(key) == b"replica-b"
    r.pexpire(key, 5000)  # make any renewal by a visible: a PEXPIRE from it would shorten this to LEASE_S
    assert a.tick() is False  # a wakes up: its compare-and-set renewal finds b's id and does nothing
    assert r.get(key) == b"replica-b" and r.pttl(key) > LEASE_S * 1000
    a.lease.release()  # nor may its release drop b's lease
    assert r.get(key) == b"replica-b"
    assert leaders(a, b) == ["replica-b"]
    assert a.status()["error"] == "the lease is held by another replica or expired"


def test_a_dead_leader_is_replaced_within_about_one_lease(pair: tuple[Leadership, Leadership]) -> None:
    a, b = pair
    a.start()
    b.start()
    assert leaders(a, b) == ["replica-a"]
    a._job.stop()  # the leader's process dies: nothing renews, nothing releases
    died = time.monotonic()
    wait_until(lambda: leaders(a, b) == ["replica-b"], LEASE_S * 4, "replica-b to take over")
    took = time.monotonic() - died
    assert took >= LEASE_S - 0.3  # not before the dead leader's lease ran out (never two leaders)


def test_redis_gone_means_nobody_leads(prefix: str) -> None:
    try:
        with redis_server() as own:
            e = election(own.url, prefix, "replica-a")
            try:
                assert e.tick() is True
                own.stop()
                assert e.tick() is False  # the renewal failed: stepped down at once
                assert not e.is_leader() and "Redis" in str(e.status()["error"])
                own.start()
                wait_until(e.tick, 15, "leadership back with Redis")  # the link's backoff, then a fresh SET NX
            finally:
                e.stop()
                e.lease.link.close()  # type: ignore[attr-defined]
    except ServerUnavailable as exc:
        pytest.skip(f"Redis not available: {exc}")


def test_auto_picks_redis_without_postgres_and_none_without_either(tmp_path: Path, server: RedisServer) -> None:
    assert make_settings(tmp_path).leader_backend == "none"
    assert make_settings(tmp_path, redis={"url": server.url}).leader_backend == "redis"
    assert make_settings(tmp_path, redis={"url": server.url}, leader={"backend": "none"}).leader_backend == "none"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"leader": {"backend": "postgres"}}, "needs a PostgreSQL database_url"),
        ({"leader": {"backend": "redis"}}, "needs redis.url"),
        ({"leader": {"lease_s": 4, "renew_s": 3}}, "at most half of leader.lease_s"),
        ({"leader": {"backend": "zookeeper"}}, "backend"),
    ],
)
def test_an_election_that_cannot_work_is_refused_at_start(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make_settings(tmp_path, **overrides)


def test_a_lone_sqlite_instance_leads_and_runs_its_jobs(tmp_path: Path) -> None:
    rt = Runtime(make_settings(tmp_path / "one", background_embedding=False, backup={"schedule": "daily"}))
    try:
        assert not rt.leadership.is_leader()  # not before it starts
        rt.leadership.start()
        rt.backups.start()
        status = rt.leader_status()
        assert status["backend"] == "none" and status["leader"] is True
        assert status["leader_replica"] == rt.shared.replica
        assert status["jobs"] == {"backup_schedule": "running", "vector_filler": "off"}
    finally:
        rt.close()
    assert not rt.leadership.is_leader()


def test_a_holder_that_stepped_down_on_a_failed_call_takes_its_live_lease_back(
    pair: tuple[Leadership, Leadership], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pair
    assert a.tick() is True
    renew = a.lease.renew

    def broken() -> bool:
        raise RuntimeError("connection reset")

    monkeypatch.setattr(a.lease, "renew", broken)
    assert a.tick() is False and "connection reset" in str(a.status()["error"])
    monkeypatch.setattr(a.lease, "renew", renew)
    assert b.tick() is False  # the key is still a's: nobody else may take it before it expires
    assert a.tick() is True  # a's acquire finds its own id and keeps the key, without waiting out the lease
    assert leaders(a, b) == ["replica-a"]
