"""The ``backup-restore`` drill: ask the live instance for a backup while users chat, and have it verified.

Why a drill: a backup nobody restored is a hope (Litestream's maintainer answers integrity reports
with "run restore drills"). The instance backs up while it serves — the drill keeps a few synthetic
users chatting meanwhile, and none may fail — then restores the file into a scratch directory and
checks it (integrity, counts, a retrieval smoke test). It reports the time to back up and the time
to verify; it passes only when the backup verified and every turn was answered.
"""

from __future__ import annotations

import time

from ragvigil.ops.drills.client import DrillError, InstanceClient
from ragvigil.ops.drills.experiment import DrillOptions, DrillResult, DrillSpec

MAX_WAIT_S = 900.0  # a backup and its verification taking longer is a failure of the drill
CHAT_EVERY_S = 0.5


def run_backup_drill(client: InstanceClient, spec: DrillSpec, opts: DrillOptions) -> DrillResult:
    result = DrillResult(spec.name)
    try:
        job = client.start_backup(verify=True)
    except DrillError as exc:
        result.problems.append(str(exc))
        return result
    deadline = time.monotonic() + MAX_WAIT_S
    while True:
        if result.requests < opts.max_requests:
            turn = client.chat("How do I export my notes?")
            result.requests += 1
            result.answered += turn.answered
            result.failed += turn.failed
            result.shed_503 += turn.shed
        try:
            job = client.backup_job(job["id"])
        except DrillError as exc:
            result.problems.append(str(exc))
            return result
        if job["status"] in ("done", "failed") or time.monotonic() > deadline:
            break
        time.sleep(CHAT_EVERY_S)
    result.backup_s, result.verify_s = job.get("backup_s"), job.get("verify_s")
    result.journal.append({"event": "backup_job", **{k: v for k, v in job.items() if k != "verify_checks"}})
    if job["status"] != "done":
        result.problems.append(f"backup job {job['status']}: {job.get('error') or 'still running after the wait'}")
    elif not job.get("verified"):
        result.problems.append(f"backup {job.get('file')} did not verify: {job.get('error')}")
    else:
        result.healing = f"{job.get('file')} verified: " + "; ".join(job.get("verify_checks") or [])
    if result.failed:
        result.problems.append(f"{result.failed} turn(s) failed while the backup ran")
    result.passed = not result.problems
    result.steady_state_restored = result.passed
    return result
