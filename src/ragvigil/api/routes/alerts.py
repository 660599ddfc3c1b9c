"""The built-in alert engine: active alerts, rule health, and reloading the rule file."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from ragvigil.api.deps import client_address, get_runtime, require
from ragvigil.api.errors import ApiError
from ragvigil.app import Runtime
from ragvigil.ops.access import Principal, Role
from ragvigil.ops.alerts.service import AlertService

router = APIRouter(prefix="/api/v1/ops/alerts", tags=["ops"])


def _service(rt: Runtime) -> AlertService:
    if rt.alerts is None:
        raise ApiError(409, "alerts_disabled", "the built-in alert engine is off (RAGVIGIL_ALERTS__ENABLED=false)")
    return rt.alerts


@router.get("", dependencies=[Depends(require(Role.viewer))])
async def list_alerts(
    rt: Runtime = Depends(get_runtime),
    state: list[Literal["pending", "firing", "resolved"]] = Query(["pending", "firing"], description="alert states"),
) -> dict[str, object]:
    """Alerts in the given states (pending and firing by default), most severe first, and the engine's status."""
    service = _service(rt)
    alerts = sorted(service.engine.alerts(state), key=lambda a: (a.severity, -(a.fired_at or a.active_at)))
    return {"engine": service.status(), "alerts": [a.as_dict() for a in alerts]}


@router.get("/rules", dependencies=[Depends(require(Role.viewer))])
async def rules(rt: Runtime = Depends(get_runtime)) -> dict[str, object]:
    """Every rule with its health (ok, no_data, error), last evaluation and active alert count."""
    service = _service(rt)
    return {"source": service.engine.ruleset.source, "rules": service.engine.rule_health()}


@router.post("/reload")
async def reload(
    request: Request, rt: Runtime = Depends(get_runtime), who: Principal = Depends(require(Role.operator))
) -> dict[str, object]:
    """Re-read the rule file now; a file with problems is refused (422) and the current rules stay."""
    service = _service(rt)
    error = await run_in_threadpool(service.reload)
    target = str(service.rules_file or "default rule pack")
    await run_in_threadpool(
        rt.audit.record, who, "alerts.reload", "rejected" if error else "ok", target, client_address(request)
    )
    if error is not None:
        raise ApiError(
            422,
            "invalid_rules",
            f"{len(error.problems)} problem(s); the previous rules stay active",
            None,
            {"problems": error.problems},
        )
    return {"rules": len(service.engine.ruleset.rules), "source": service.engine.ruleset.source}
