"""Backups inside the serving process: jobs asked for over the API, and the schedule with its retention.

Why in the process: it holds the vector store, so it can flush the in-memory index changes before
copying (a CLI backup of a live data dir only sees what is on disk). One backup at a time; a job
runs on its own thread and the API answers 202 with its id at once. The scheduler is a
``Periodic`` that wakes every minute and runs a backup when one is due: at ``daily_hour_utc`` once a
day, every ``interval_h``, or at once when the newest verified backup is older than the schedule
allows (a fresh or long-stopped instance catches up instead of waiting for tomorrow).

With several replicas only the leader (``ops.leader``, the ``is_leader`` callable) runs the schedule and
prunes: a standby's scheduler wakes as often but does nothing, and says so (``schedule_state``:
``standby``), so two replicas never back up or prune the same shared ``backup.dir`` at once. A backup
asked of a standby over the API still runs (an operator asked that replica), without the pruning.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from ragvigil.config import Settings
from ragvigil.ops import metrics
from ragvigil.ops.backup.create import create_backup
from ragvigil.ops.backup.errors import BackupBusy
from ragvigil.ops.backup.retention import last_verified, list_backups, prune
from ragvigil.ops.backup.verify import SmokeTest, VerifyReport, verify_backup
from ragvigil.ops.periodic import Periodic

log = logging.getLogger(__name__)

MAX_JOBS_KEPT = 50
TICK_S = 60.0


class BackupService:
    """``start_job`` / ``jobs`` for the API, ``run_scheduled`` for the scheduler (``start``/``stop``)."""

    def __init__(
        self,
        settings: Settings,
        flush_vectors: Callable[[], None] | None = None,
        smoke: SmokeTest | None = None,
        *,
        tick_s: float = TICK_S,
        is_leader: Callable[[], bool] = lambda: True,
    ) -> None:
        self.settings = settings
        self.is_leader = is_leader
        self.standby_ticks = 0  # scheduler wakes spent standing by (another replica leads)
        self.flush_vectors = flush_vectors
        self.smoke = smoke
        self._lock = threading.Lock()  # one backup at a time
        self._jobs: deque[dict[str, Any]] = deque(maxlen=MAX_JOBS_KEPT)
        self._scheduler = Periodic("backup-scheduler", tick_s, self.tick, run_at_start=True)
        self.refresh_gauges()

    # -- the schedule ----------------------------------------------------------
    @property
    def scheduled(self) -> bool:
        return self.settings.backup.schedule != "off"

    def period(self) -> timedelta:
        b = self.settings.backup
        return timedelta(hours=b.interval_h) if b.schedule == "interval" else timedelta(days=1)

    def max_age(self) -> timedelta:
        return self.period() + timedelta(hours=self.settings.backup.grace_h)

    def refresh_gauges(self) -> None:
        verified = last_verified(self.settings.backup_dir)
        metrics.BACKUP_LAST_VERIFIED.set(verified.timestamp() if verified else 0)
        if self.scheduled:
            metrics.BACKUP_MAX_AGE.set(self.max_age().total_seconds())

    def due(self, now: datetime) -> bool:
        """Whether a scheduled backup should run at ``now`` (UTC)."""
        if not self.scheduled:
            return False
        backups = list_backups(self.settings.backup_dir)
        newest = backups[0].created_at if backups else None
        verified = last_verified(self.settings.backup_dir)
        # catch up: nothing verified, or close to too old (a twenty-fourth of the period before BackupMissing);
        # not again within 30 minutes of the last try (one that failed to verify)
        stale = verified is None or now - verified > self.max_age() - self.period() / 24
        if stale and (newest is None or now - newest > timedelta(minutes=30)):
            return True
        if self.settings.backup.schedule == "interval":
            return newest is None or now - newest >= self.period()
        slot = now.replace(hour=self.settings.backup.daily_hour_utc, minute=0, second=0, microsecond=0)
        return now >= slot and (newest is None or newest < slot)

    def schedule_state(self) -> str:
        """``off`` (not scheduled), ``stopped``, ``running`` (this replica backs up on schedule) or ``standby``."""
        if not self.scheduled:
            return "off"
        if not self._scheduler.running:
            return "stopped"
        return "running" if self.is_leader() else "standby"

    def tick(self) -> None:
        if not self.is_leader():
            self.standby_ticks += 1
            return
        if self.due(datetime.now(UTC)):
            self.run(self._new_job("scheduler", self.settings.backup.encrypt, self.settings.backup.verify_after_create))

    def start(self) -> None:
        if self.scheduled:
            self._scheduler.start()

    def stop(self) -> None:
        self._scheduler.stop()

    # -- jobs ------------------------------------------------------------------
    def _new_job(self, by: str, encrypt: bool, verify: bool) -> dict[str, Any]:
        job: dict[str, Any] = {
            "id": secrets.token_hex(6),
            "status": "queued",
            "by": by,
            "encrypt": encrypt,
            "verify": verify,
            "requested_at": datetime.now(UTC).isoformat(),
        }
        self._jobs.appendleft(job)
        return job

    def jobs(self) -> list[dict[str, Any]]:
        return [dict(j) for j in self._jobs]

    def job(self, job_id: str) -> dict[str, Any] | None:
        return next((dict(j) for j in self._jobs if j["id"] == job_id), None)

    def start_job(self, by: str, *, encrypt: bool = False, verify: bool = True) -> dict[str, Any]:
        """Start a backup on its own thread; ``BackupBusy`` while one runs."""
        if self._lock.locked():
            raise BackupBusy("a backup is already running; see GET /api/v1/admin/backups")
        job = self._new_job(by, encrypt, verify)
        threading.Thread(target=self.run, args=(job,), name=f"backup-{job['id']}", daemon=True).start()
        return dict(job)

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        """Create, verify (if asked) and prune; the job's record says what happened and how long each took."""
        if not self._lock.acquire(blocking=False):
            job.update(status="failed", error="another backup was running")
            return job
        try:
            job["status"] = "running"
            t0 = time.monotonic()
            try:
                result = create_backup(self.settings, encrypt=job["encrypt"], flush_vectors=self.flush_vectors)
            except Exception as exc:
                job.update(status="failed", error=str(exc)[:1000])
                metrics.BACKUP_RUNS.labels("failed").inc()
                log.error("backup_failed", extra={"job": job["id"], "error": str(exc)[:500]})
                return job
            job.update(file=result.path.name, path=str(result.path), bytes=result.path.stat().st_size)
            job["backup_s"] = round(time.monotonic() - t0, 3)
            outcome = "created"
            if job["verify"]:
                t1 = time.monotonic()
                try:
                    report = verify_backup(result.path, self.settings, smoke=self.smoke)
                except Exception as exc:  # the job must end with a status, whatever broke
                    report = VerifyReport(str(result.path), ok=False, error=f"{type(exc).__name__}: {exc}")
                job["verify_s"] = round(time.monotonic() - t1, 3)
                job["verified"], job["verify_checks"] = report.ok, report.checks
                if not report.ok:
                    job["error"] = report.error
                    log.error("backup_verify_failed", extra={"job": job["id"], "error": report.error})
                outcome = "verified" if report.ok else "verify_failed"
            if self.scheduled and self.is_leader():
                b = self.settings.backup
                job["pruned"] = [p.name for p in prune(self.settings.backup_dir, b.keep_daily, b.keep_weekly)]
            elif self.scheduled:
                job["pruned"] = "standby"  # retention is the leader's
            self.refresh_gauges()
            metrics.BACKUP_RUNS.labels(outcome).inc()
            job["status"] = "failed" if outcome == "verify_failed" else "done"
            job["finished_at"] = datetime.now(UTC).isoformat()
            return job
        finally:
            self._lock.release()
