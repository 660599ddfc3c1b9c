"""The provider router for operators: every provider's breaker, and forcing one open or closed."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from ragvigil.api.deps import client_address, get_runtime, require
from ragvigil.api.errors import ApiError
from ragvigil.app import Runtime
from ragvigil.ops.access import Principal, Role
from ragvigil.providers.router import UnknownProvider

router = APIRouter(prefix="/api/v1/ops/providers", tags=["ops"])


@router.get("", dependencies=[Depends(require(Role.viewer))])
async def list_providers(rt: Runtime = Depends(get_runtime)) -> dict[str, object]:
    """The providers in the order they are tried, each with its breaker state, rates and whether its key is bad."""
    return {"providers": rt.router.status()}


class BreakerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: Literal["open", "closed", "auto"]


@router.put("/{name}/breaker")
async def force_breaker(
    name: str,
    body: BreakerIn,
    request: Request,
    rt: Runtime = Depends(get_runtime),
    who: Principal = Depends(require(Role.operator)),
) -> dict[str, object]:
    """Force a provider's breaker open (no turn calls it) or closed (every turn may), or back to ``auto``.

    ``closed`` and ``auto`` also clear a rejected key: the operator says it was fixed. Audited as
    ``provider.breaker``.
    """
    source = client_address(request)
    try:
        out = rt.router.force(name, body.state, who.name)
    except UnknownProvider:
        await run_in_threadpool(rt.audit.record, who, "provider.breaker", "not_found", name, source)
        raise ApiError(404, "provider_not_found", f"no provider {name!r}") from None
    except ValueError as exc:
        await run_in_threadpool(rt.audit.record, who, "provider.breaker", "rejected", name, source)
        raise ApiError(409, "provider_has_no_breaker", str(exc)) from None
    detail = {"state": body.state, "before": out["before"]}
    await run_in_threadpool(rt.audit.record, who, "provider.breaker", "ok", name, source, detail)
    return out
