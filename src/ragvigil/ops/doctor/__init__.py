"""``ragvigil doctor``: a deployment's configuration and dependencies checked, each problem with its fix.

One module per check group (``configuration``, ``database``, ``redis_check``, ``vectors``, ``originals``, ``disk``,
``keys``, ``channels``, ``models``, ``backups``); ``run_checks`` runs them all under deadlines.
Everything is read-only: nothing is migrated, created or sent.
"""

from ragvigil.ops.doctor.backups import NewestVerifiedBackup
from ragvigil.ops.doctor.originals import register_originals_check
from ragvigil.ops.doctor.result import CheckResult, Status, healthy
from ragvigil.ops.doctor.runner import GROUPS, run_checks
from ragvigil.ops.doctor.vectors import register_vector_server_check

__all__ = [
    "GROUPS",
    "CheckResult",
    "NewestVerifiedBackup",
    "Status",
    "healthy",
    "register_originals_check",
    "register_vector_server_check",
    "run_checks",
]
