"""Probes and metrics. ``live`` never calls a dependency; ``ready`` fails only when ragvigil cannot answer."""

from __future__ import annotations

import logging
import platform
import shutil
import time

import psutil
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, StrictBool
from starlette.concurrency import run_in_threadpool

from ragvigil import __version__
from ragvigil.api.deps import client_address, get_runtime, probe_access, require
from ragvigil.app import Runtime
from ragvigil.ops import instrumentation
from ragvigil.ops.access import Principal, Role
from ragvigil.ops.metrics import REGISTRY

log = logging.getLogger(__name__)
router = APIRouter(tags=["ops"])
probes = APIRouter(tags=["ops"], dependencies=[Depends(probe_access)])


@probes.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "alive"}


@probes.get("/health/ready")
async def ready(rt: Runtime = Depends(get_runtime)) -> JSONResponse:
    """200 while ragvigil can answer, degraded included; 503 when it cannot or is draining.

    Waits only for the checks readiness needs (database, disk): an optional check still running
    (an embedding engine busy with questions) answers with its last result instead.
    """
    results = await run_in_threadpool(rt.health.results, False)
    chat = rt.health.rollup(results)["chat"]["status"]
    status = "draining" if rt.draining else {"healthy": "ready", "degraded": "degraded"}.get(chat, "unready")
    body = {"status": status, "checks": {r.name: r.to_dict() for r in results}}
    body["schema"] = await run_in_threadpool(rt.schema.report)  # at_head / behind / newer, what is missing
    return JSONResponse(body, status_code=503 if status in ("unready", "draining") else 200)


@probes.get("/health")
async def deep_health(rt: Runtime = Depends(get_runtime)) -> JSONResponse:
    """Every dependency check plus the dependency graph rolled up to healthy / degraded / unhealthy."""
    results = await run_in_threadpool(rt.health.results)
    graph = rt.health.rollup(results)
    status = graph["chat"]["status"]
    body = {
        "status": status,
        "checks": {r.name: r.to_dict() | {"required_for_readiness": r.critical} for r in results},
        "graph": graph,
    }
    if "vector_store" in body["checks"]:  # hybrid or lexical_only, and why: the store may pass while tripped
        body["checks"]["vector_store"]["details"] = {"retrieval_mode": rt.retriever.mode.state()}
    if "redis" in body["checks"]:  # shared with the replicas, or each deciding alone while Redis is down
        body["checks"]["redis"]["details"] = rt.shared.status()
    body["leader"] = await run_in_threadpool(rt.leader_status)  # who leads; this replica's leader-only jobs
    return JSONResponse(body, status_code=503 if status == "unhealthy" else 200)


@router.get("/api/v1/system/info", dependencies=[Depends(require(Role.viewer))])
async def system_info(rt: Runtime = Depends(get_runtime)) -> dict[str, object]:
    proc = psutil.Process()
    mem = psutil.virtual_memory()
    disk = shutil.disk_usage(rt.settings.data_dir)
    return {
        "version": __version__,
        "profile": rt.settings.profile.value,
        "uptime_s": round(time.time() - rt.started_at, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "process": {
            "pid": proc.pid,
            "rss_bytes": proc.memory_info().rss,
            "cpu_seconds": round(sum(proc.cpu_times()[:2]), 2),
            "threads": proc.num_threads(),
            "open_fds": proc.num_fds(),
        },
        "host": {"cpus": psutil.cpu_count(), "memory_total_bytes": mem.total, "memory_used_ratio": mem.percent / 100},
        "data_dir": {"path": str(rt.settings.data_dir), "disk_free_bytes": disk.free, "disk_total_bytes": disk.total},
        "generator": rt.generator.name,
        "vector_index": rt.settings.retrieval.vector_index,
    }


@probes.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def prometheus_metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/v1/ops/audit", dependencies=[Depends(require(Role.admin))])
async def audit_log(
    action: str | None = None,
    actor: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    rt: Runtime = Depends(get_runtime),
) -> list[dict[str, object]]:
    rows = await run_in_threadpool(rt.audit.query, action, actor, None, limit)
    return [
        {
            "at": r.at,
            "actor": r.actor,
            "role": r.role,
            "action": r.action,
            "target": r.target,
            "source": r.source,
            "result": r.result,
            "detail": r.detail,
        }
        for r in rows
    ]


class InstrumentationIn(BaseModel):
    enabled: StrictBool


@router.get("/api/v1/ops/instrumentation", dependencies=[Depends(require(Role.viewer))])
async def instrumentation_state() -> dict[str, bool]:
    return {"enabled": instrumentation.enabled}


@router.put("/api/v1/ops/instrumentation")
async def set_instrumentation(
    body: InstrumentationIn,
    request: Request,
    rt: Runtime = Depends(get_runtime),
    who: Principal = Depends(require(Role.operator)),
) -> dict[str, bool]:
    """Switch request metrics, spans and access lines off or on at run time (e.g. to shed load).

    Probes, alerts and the business counters stay; the switch is logged and audited, since
    requests served while it is off leave no trace in /metrics, traces or logs.
    """
    before = instrumentation.enabled
    instrumentation.configure(body.enabled)
    log.warning("instrumentation_switched", extra={"enabled": body.enabled, "by": who.name})
    await run_in_threadpool(
        rt.audit.record,
        who,
        "instrumentation.set",
        "ok",
        str(body.enabled).lower(),
        client_address(request),
        {"before": before},
    )
    return {"enabled": instrumentation.enabled}
