"""Reindex a knowledge base from its kept originals: start a job (admin, audited), read its progress."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from ragvigil.api.deps import client_address, get_runtime, require
from ragvigil.api.openapi import ERROR_REF
from ragvigil.api.schemas import KB_PATTERN
from ragvigil.app import Runtime
from ragvigil.errors import RagvigilError
from ragvigil.ops.access import Principal, Role

router = APIRouter(prefix="/api/v1", tags=["knowledge"])
KbName = Annotated[str, Path(pattern=KB_PATTERN)]
_ERRORS = {"content": {"application/json": {"schema": ERROR_REF}}}
_RUNNING = {
    404: {"description": "No such knowledge base", **_ERRORS},
    409: {"description": "A reindex of this knowledge base is already running", **_ERRORS},
}
_NOT_RUN = {404: {"description": "No reindex of this knowledge base has run", **_ERRORS}}


@router.post("/kb/{kb}/reindex", status_code=202, responses=_RUNNING)
async def start_reindex(
    request: Request,
    kb: KbName,
    rt: Runtime = Depends(get_runtime),
    who: Principal = Depends(require(Role.admin)),
) -> dict[str, Any]:
    """Rebuild ``kb``'s chunks and vectors from its originals in the background; answers serve the old index
    until the new one is complete. 202 with ``job_id``; 409 ``reindex_running``; every attempt is audited."""
    source, target = client_address(request), f"kb:{kb}"
    try:
        job_id = await run_in_threadpool(rt.reindexer.start, kb, who.name)
    except RagvigilError as exc:
        await run_in_threadpool(rt.audit.record, who, "kb.reindex", exc.code, target, source)
        raise
    await run_in_threadpool(rt.audit.record, who, "kb.reindex", "ok", target, source, {"job_id": job_id})
    return (await run_in_threadpool(rt.reindexer.status, kb)).to_dict()


@router.get("/kb/{kb}/reindex", responses=_NOT_RUN, dependencies=[Depends(require(Role.admin))])
async def reindex_status(kb: KbName, rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """The newest reindex of ``kb``: ``state`` (running, done, failed, interrupted), ``done``/``total`` documents,
    ``skipped``, ``failed`` and the first ``errors``."""
    return (await run_in_threadpool(rt.reindexer.status, kb)).to_dict()
