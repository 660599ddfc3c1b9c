"""Leader election among the replicas of one service: who runs the work done once per cluster.

``build_leadership`` picks the lease by ``leader.backend`` (``Settings.leader_backend`` resolves ``auto``):
a PostgreSQL advisory lock when the database is PostgreSQL, else a Redis lease when ``redis.url`` is set,
else no election (one SQLite instance always leads). ``LeaderOnly`` runs a job only while this replica
leads: started on a gain, stopped on a loss, and its ``state()`` says ``standby`` meanwhile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ragvigil.config import Settings
from ragvigil.ops.leader.gated import LeaderOnly
from ragvigil.ops.leader.leadership import AlwaysLease, Leadership, Lease

if TYPE_CHECKING:  # redis-py is imported only where Redis is configured (the embedded default has none)
    from ragvigil.ops.shared.link import RedisLink

__all__ = ["AlwaysLease", "LeaderOnly", "Leadership", "Lease", "build_leadership"]


def build_leadership(settings: Settings, replica: str, link: RedisLink | None) -> Leadership:
    """The election of this replica (``replica``: its id, as ``rt.shared.replica``); not started."""
    ls = settings.leader
    backend = settings.leader_backend
    lease: Lease
    if backend == "postgres":
        from ragvigil.ops.leader.pg_lock import PostgresLock

        lease = PostgresLock(settings.db_url, replica, timeout_s=min(5.0, max(0.5, ls.renew_s)))
    elif backend == "redis":
        from ragvigil.ops.leader.redis_lease import RedisLease

        if link is None:
            raise ValueError("leader.backend redis needs redis.url")
        lease = RedisLease(link, replica, lease_s=ls.lease_s)
    else:
        lease = AlwaysLease(replica)
    return Leadership(lease, replica, lease_s=ls.lease_s, renew_s=ls.renew_s)
