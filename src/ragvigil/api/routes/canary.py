"""The safety canary's state (viewer): passing or not, the last run and the last failure, by probe id."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from ragvigil.api.deps import get_runtime, require
from ragvigil.app import Runtime
from ragvigil.ops.access import Role

router = APIRouter(prefix="/api/v1/ops", tags=["ops"])


@router.get("/canary", dependencies=[Depends(require(Role.viewer))])
async def canary_status(rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """``passing`` (null before the first run), ``last_run``, ``last_failure`` (probe ids, never their text)."""
    canary = getattr(rt, "canary", None)
    if canary is None:
        return {"enabled": False, "passing": None, "last_run": None, "last_failure": None}
    return canary.status()
