"""Probes and metrics. ``live`` never calls a dependency; ``ready`` fails only when ragvigil cannot answer."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from ragvigil.api.deps import get_runtime
from ragvigil.app import Runtime
from ragvigil.ops.metrics import REGISTRY

router = APIRouter(tags=["ops"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/health/ready")
async def ready(rt: Runtime = Depends(get_runtime)) -> JSONResponse:
    results = await run_in_threadpool(rt.health.run)
    critical_down = [r.name for r in results if r.critical and not r.ok]
    degraded = [r.name for r in results if not r.critical and not r.ok]
    status = "unready" if critical_down else "degraded" if degraded else "ready"
    body = {"status": status, "checks": {r.name: r.to_dict() for r in results}}
    return JSONResponse(body, status_code=503 if critical_down else 200)


@router.get("/metrics")
async def prometheus_metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
