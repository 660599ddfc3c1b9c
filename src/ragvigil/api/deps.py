"""Shared route dependencies: the runtime, the request id, and who is calling with which role."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request

from ragvigil.api.errors import ApiError
from ragvigil.app import Runtime
from ragvigil.ops.access import ANONYMOUS_DEV, Principal, Role


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_request_id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


def get_principal(request: Request, rt: Runtime = Depends(get_runtime)) -> Principal:
    """The caller. A sync dependency on purpose: the key lookup is a database read."""
    if not rt.settings.auth_required:
        return ANONYMOUS_DEV
    key = _presented_key(request)
    if key is None:
        raise ApiError(401, "unauthorized", "an API key is required (Authorization: Bearer <key> or X-API-Key)")
    principal = rt.keys.authenticate(key)
    if principal is None:
        raise ApiError(401, "unauthorized", "unknown or revoked API key")
    return principal


def require(role: Role) -> Callable[..., Principal]:
    """Dependency: the caller's role must be at least ``role``; refused operator/admin attempts are audited."""

    def dependency(
        request: Request, principal: Principal = Depends(get_principal), rt: Runtime = Depends(get_runtime)
    ) -> Principal:
        if principal.role < role:
            if role >= Role.operator:
                rt.audit.record(
                    principal,
                    f"{request.method} {request.scope.get('route').path if request.scope.get('route') else request.url.path}",
                    "denied",
                    source=client_address(request),
                )
            raise ApiError(403, "forbidden", f"this needs the {role.name} role; the key has {principal.role.name}")
        return principal

    return dependency


def probe_access(request: Request, rt: Runtime = Depends(get_runtime)) -> None:
    """Probes and /metrics are open when ``open_probes`` is set (Prometheus, kubelet); viewer otherwise."""
    if rt.settings.open_probes:
        return
    require(Role.viewer)(request, get_principal(request, rt), rt)
