"""Admission state for operators, and the feature switches they may flip by hand (audited)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, StrictBool
from starlette.concurrency import run_in_threadpool

from ragvigil.api.deps import client_address, get_runtime, require
from ragvigil.api.errors import ApiError
from ragvigil.app import Runtime
from ragvigil.ops.access import Principal, Role
from ragvigil.ops.admission import FEATURES

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/ops", tags=["ops"])


class FeatureIn(BaseModel):
    enabled: StrictBool


@router.get("/admission", dependencies=[Depends(require(Role.viewer))])
async def admission_state(rt: Runtime = Depends(get_runtime)) -> dict[str, object]:
    """The concurrency limit, in flight, queued, shed and rate-limited counts, pressure and feature flags."""
    return rt.admission.status()


@router.put("/features/{name}")
async def set_feature(
    body: FeatureIn,
    request: Request,
    name: str = Path(..., max_length=64),
    rt: Runtime = Depends(get_runtime),
    who: Principal = Depends(require(Role.operator)),
) -> dict[str, object]:
    """Shed a non-core feature, or restore it. The automatic controller never restores what an operator shed."""
    if name not in FEATURES:
        raise ApiError(404, "feature_not_found", f"no feature named {name!r}; features: {', '.join(FEATURES)}")
    by = f"operator:{who.name}"
    changed = rt.features.restore(name, by, "by hand") if body.enabled else rt.features.shed(name, "by hand", by)
    await run_in_threadpool(
        rt.audit.record,
        who,
        "features.set",
        "ok" if changed else "unchanged",
        name,
        client_address(request),
        {"enabled": body.enabled},
    )
    return next(f for f in rt.features.status() if f["name"] == name)
