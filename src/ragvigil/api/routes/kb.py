"""Knowledge bases: upload, list, inspect and delete documents; search."""

from __future__ import annotations

import logging
import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, Path, Query, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from ragvigil.api.deps import client_address, get_runtime, require
from ragvigil.api.errors import ApiError
from ragvigil.api.openapi import ERROR_REF
from ragvigil.api.schemas import KB_PATTERN, DocumentOut, IngestOut
from ragvigil.app import Runtime
from ragvigil.errors import RagvigilError
from ragvigil.knowledge.ingest import InvalidSource, check_source
from ragvigil.ops import metrics
from ragvigil.ops.access import Principal, Role

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["knowledge"])
KbName = Annotated[str, Path(pattern=KB_PATTERN)]


Viewer = Depends(require(Role.viewer))


@router.get("/kb", dependencies=[Viewer])
async def list_kbs(rt: Runtime = Depends(get_runtime)) -> list[str]:
    return await run_in_threadpool(rt.catalog.kb_names)


@router.post("/kb/{kb}/documents", status_code=201, response_model=list[IngestOut])
async def upload_documents(
    request: Request,
    kb: KbName,
    files: list[UploadFile] = File(..., alias="file", min_length=1),
    rt: Runtime = Depends(get_runtime),
    who: Principal = Depends(require(Role.operator)),
) -> list[IngestOut]:
    """Upload one or more files (form field ``file``). Each file's outcome is reported separately.

    Every file name is checked before any file is stored, so a refused upload stores nothing.
    """
    _check_upload(files, rt.settings.ingest.max_files_per_upload)
    results: list[IngestOut] = []
    deadline = time.monotonic() + rt.settings.ingest.upload_time_budget_s  # bounds the whole upload
    try:
        for f in files:
            raw = await f.read()
            res = await run_in_threadpool(rt.ingestor.ingest_bytes, kb, f.filename or "", raw, deadline)
            metrics.DOCUMENTS_INGESTED.labels(res.outcome).inc()
            results.append(IngestOut(**res.__dict__))
    except Exception as exc:
        # the files before this one are stored: the audit trail says so, and which file broke off the upload
        broken = files[len(results)].filename or ""
        detail = [*_outcomes(results), {"source": broken, "outcome": "error", "error": type(exc).__name__}]
        await _audit_upload(request, rt, who, kb, "error", detail, raise_errors=False)
        raise
    result = "failed" if any(r.outcome == "failed" for r in results) else "ok"
    await _audit_upload(request, rt, who, kb, result, _outcomes(results))
    rt.filler.wake()
    return results


def _check_upload(files: list[UploadFile], max_files: int) -> None:
    """422 naming the field for a name the documents table cannot hold (NUL, control characters, >1024)."""
    if len(files) > max_files:
        raise ApiError(
            422,
            "validation_error",
            f"{len(files)} files in one upload; at most {max_files} (ingest.max_files_per_upload)",
            "file",
        )
    for i, f in enumerate(files, 1):
        try:
            check_source(f.filename or "")
        except InvalidSource as exc:
            name = repr((f.filename or "")[:80])
            raise ApiError(422, "validation_error", f"file {i} ({name}): {exc}", "file") from None


def _outcomes(results: list[IngestOut]) -> list[dict[str, str | None]]:
    return [{"source": r.source, "outcome": r.outcome, "error": r.error} for r in results]


async def _audit_upload(
    request: Request,
    rt: Runtime,
    who: Principal,
    kb: str,
    result: str,
    files: list[dict[str, str | None]],
    raise_errors: bool = True,
) -> None:
    try:
        await run_in_threadpool(
            rt.audit.record, who, "document.upload", result, f"kb:{kb}", client_address(request), {"files": files}
        )
    except Exception:
        if raise_errors:
            raise
        log.exception("audit_record_failed", extra={"action": "document.upload"})


@router.get("/kb/{kb}/documents", response_model=list[DocumentOut], dependencies=[Viewer])
async def list_documents(kb: KbName, rt: Runtime = Depends(get_runtime)) -> list[DocumentOut]:
    docs = await run_in_threadpool(rt.ingestor.documents, kb)
    return [DocumentOut.model_validate(d, from_attributes=True) for d in docs]


@router.get("/kb/{kb}/documents/{doc_id}", response_model=DocumentOut, dependencies=[Viewer])
async def get_document(kb: KbName, doc_id: str, rt: Runtime = Depends(get_runtime)) -> DocumentOut:
    doc = await run_in_threadpool(rt.ingestor.document, kb, doc_id)
    return DocumentOut.model_validate(doc, from_attributes=True)


_NOT_QUARANTINED = {
    409: {"description": "The document is not quarantined", "content": {"application/json": {"schema": ERROR_REF}}}
}


@router.post("/kb/{kb}/documents/{doc_id}/release", response_model=DocumentOut, responses=_NOT_QUARANTINED)
async def release_document(
    request: Request,
    kb: KbName,
    doc_id: str,
    rt: Runtime = Depends(get_runtime),
    who: Principal = Depends(require(Role.operator)),
) -> DocumentOut:
    """Serve a quarantined document as it is: its sources then say ``quality: released``.

    404 ``document_not_found``, 409 ``document_not_quarantined``; every attempt is audited.
    """
    source, target = client_address(request), f"{kb}/{doc_id}"
    try:
        doc = await run_in_threadpool(rt.ingestor.release, kb, doc_id, who.name)
    except RagvigilError as exc:
        await run_in_threadpool(rt.audit.record, who, "document.release", exc.code, target, source)
        raise
    await run_in_threadpool(
        rt.audit.record, who, "document.release", "ok", target, source, {"reason": doc.quarantine_reason}
    )
    return DocumentOut.model_validate(doc, from_attributes=True)


@router.delete("/kb/{kb}/documents/{doc_id}", status_code=204)
async def delete_document(
    request: Request,
    kb: KbName,
    doc_id: str,
    rt: Runtime = Depends(get_runtime),
    who: Principal = Depends(require(Role.admin)),
) -> None:
    source = client_address(request)
    try:
        await run_in_threadpool(rt.ingestor.delete_document, kb, doc_id)
    except LookupError:
        await run_in_threadpool(rt.audit.record, who, "document.delete", "not_found", f"{kb}/{doc_id}", source)
        raise
    await run_in_threadpool(rt.audit.record, who, "document.delete", "ok", f"{kb}/{doc_id}", source)


@router.get("/kb/{kb}/search", dependencies=[Viewer])
async def search(
    kb: KbName,
    q: str = Query(..., min_length=1, max_length=2000),
    k: int = Query(5, ge=1, le=50),
    mode: str = Query("hybrid", pattern="^(hybrid|bm25|vector)$"),
    rt: Runtime = Depends(get_runtime),
) -> dict[str, object]:
    result = await run_in_threadpool(rt.retriever.search, kb, q, k, mode)
    return {
        "query": q,
        "tokens": result.tokens,
        "vector_error": result.vector_error,
        "hits": [h.to_dict() for h in result.hits],
    }
