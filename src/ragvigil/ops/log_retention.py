"""Log retention on a schedule: at start, then daily, in the process that owns the log files.

Why here and not in the runtime: ``ops.logfiles`` says what to drop; this says when, and is the one
place a serving instance (or an operator's action) asks for a pass.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from ragvigil.ops.logfiles import RetentionPolicy, RetentionReport, enforce_retention
from ragvigil.ops.periodic import Periodic

log = logging.getLogger(__name__)

DAY_S = 24 * 3600.0


class LogRetention:
    """Trims the rotated files under ``log_dir`` to ``days`` per level; ``start`` runs it now and daily."""

    def __init__(self, log_dir: Path, days: Mapping[str, int | None], interval_s: float = DAY_S) -> None:
        self.log_dir = log_dir
        self.policy = RetentionPolicy(days=dict(days))
        self._job = Periodic("log-retention", interval_s, self.enforce, run_at_start=True)

    def enforce(self, now: datetime | None = None) -> RetentionReport:
        """Drop rotated log lines older than their level's retention."""
        report = enforce_retention(self.log_dir, self.policy, now=now)
        if report.dropped_total:
            log.info("log_retention_enforced", extra={"dropped": dict(report.dropped), "files": report.files_scanned})
        return report

    def start(self) -> None:
        self._job.start()

    def stop(self) -> None:
        self._job.stop()
