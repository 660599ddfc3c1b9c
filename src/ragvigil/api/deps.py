"""Shared route dependencies: the runtime, the request id, and who is calling with which role.

They are ``async`` on purpose: FastAPI runs a plain ``def`` dependency in the thread pool, and a
thread hop per dependency per request cost more CPU than the work itself (measured with py-spy:
the hand-off to the worker thread was the largest item of a cached chat turn). Only the database
reads (key lookup, audit of a refusal) go to a thread.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from ragvigil.api.errors import ApiError
from ragvigil.api.open_routes import open_without_key
from ragvigil.app import Runtime
from ragvigil.ops.access import ANONYMOUS, Principal, Role, is_loopback


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def get_request_id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


def _route_path(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", None) or request.url.path


def admits_anonymous(request: Request, rt: Runtime) -> bool:
    """Development's open routes, for a keyless caller on loopback (see ``open_routes``)."""
    return (
        not rt.settings.auth_required
        and open_without_key(request.method, _route_path(request))
        and is_loopback(client_address(request))
    )


async def get_principal(request: Request, rt: Runtime = Depends(get_runtime)) -> Principal:
    """The caller. A presented key is always checked; without one only an open route admits anonymous.

    The key lookup is a database read, so it runs in a worker thread.
    """
    key = _presented_key(request)
    if key is None:
        if admits_anonymous(request, rt):
            return ANONYMOUS
        hint = (
            "" if rt.settings.auth_required else " (the first start stored an admin key in admin.key in the data dir)"
        )
        raise ApiError(401, "unauthorized", f"an API key is required (Authorization: Bearer <key> or X-API-Key){hint}")
    principal = await run_in_threadpool(rt.keys.authenticate, key)
    if principal is None:
        raise ApiError(401, "unauthorized", "unknown or revoked API key")
    return principal


def require(role: Role) -> Callable[..., Principal]:
    """Dependency: the caller's role must be at least ``role``; refused operator/admin attempts are audited.

    The anonymous principal passes: ``get_principal`` returns it only on a route open without a key.
    """

    async def dependency(
        request: Request, principal: Principal = Depends(get_principal), rt: Runtime = Depends(get_runtime)
    ) -> Principal:
        request.state.principal = principal  # whose request it is, for the trace it leaves (api.middleware)
        if principal.role < role and principal is not ANONYMOUS:  # anonymous got here only on an open route
            if role >= Role.operator:
                route = request.scope.get("route")
                await run_in_threadpool(
                    rt.audit.record,
                    principal,
                    f"{request.method} {route.path if route else request.url.path}",
                    "denied",
                    source=client_address(request),
                )
            raise ApiError(403, "forbidden", f"this needs the {role.name} role; the key has {principal.role.name}")
        return principal

    return dependency


async def probe_access(request: Request, rt: Runtime = Depends(get_runtime)) -> None:
    """Probes and /metrics are open when ``open_probes`` is set (Prometheus, kubelet); viewer otherwise."""
    if rt.settings.open_probes:
        return
    await require(Role.viewer)(request, await get_principal(request, rt), rt)
