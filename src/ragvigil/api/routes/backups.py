"""Backups of the running instance (admin, audited): ask for one, see the jobs and the backup files.

Why over HTTP: the serving process holds the vector store, so only it can flush in-memory index
changes before the copy; a drill or an external scheduler asks it here. The backup runs on a thread
of its own: the answer is 202 with the job's id at once, ``GET`` says how it went.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, StrictBool
from starlette.concurrency import run_in_threadpool

from ragvigil.api.deps import client_address, get_runtime, require
from ragvigil.app import Runtime
from ragvigil.errors import NotFound
from ragvigil.ops.access import Principal, Role
from ragvigil.ops.backup import BackupError, BackupNotConfigured, list_backups

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])
# 409: a backup already running, or encryption asked for without a key
OPENAPI_STATUSES = {"/api/v1/admin/backups": ["409"]}


class BackupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    encrypt: StrictBool = False
    verify: StrictBool = True


@router.post("/backups", status_code=202)
async def create_backup(
    body: BackupIn,
    request: Request,
    rt: Runtime = Depends(get_runtime),
    who: Principal = Depends(require(Role.admin)),
) -> dict[str, Any]:
    """Start a backup of every store (409 ``backup_running`` while one runs); body ``{}`` for the defaults:
    verified, not encrypted."""
    detail: dict[str, Any] = {"encrypt": body.encrypt, "verify": body.verify}
    if body.encrypt and rt.settings.backup.encryption_key is None:
        await run_in_threadpool(rt.audit.record, who, "backup.create", "refused", None, client_address(request), detail)
        raise BackupNotConfigured("encrypt needs backup.encryption_key in the settings")
    try:
        job = rt.backups.start_job(who.name, encrypt=body.encrypt, verify=body.verify)
    except BackupError:
        await run_in_threadpool(rt.audit.record, who, "backup.create", "refused", None, client_address(request), detail)
        raise
    await run_in_threadpool(rt.audit.record, who, "backup.create", "ok", job["id"], client_address(request), detail)
    return job


@router.get("/backups", dependencies=[Depends(require(Role.admin))])
async def backups(rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """The jobs of this process (newest first, with status and times) and the backup files on disk."""
    files = await run_in_threadpool(list_backups, rt.settings.backup_dir)
    # schedule: off / running / standby (another replica leads and backs up on schedule)
    return {
        "jobs": rt.backups.jobs(),
        "files": [f.as_dict() for f in files[:200]],
        "schedule": rt.backups.schedule_state(),
    }


@router.get("/backups/{job_id}", dependencies=[Depends(require(Role.admin))])
async def backup_job(job_id: str, rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """One job: queued, running, done or failed, the file, ``backup_s`` and ``verify_s``."""
    job = rt.backups.job(job_id)
    if job is None:
        raise NotFound(f"no backup job {job_id}")
    return job
