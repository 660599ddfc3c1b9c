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
from ragvigil.app import Runtime
from ragvigil.ops.access import ANONYMOUS_DEV, Principal, Role


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


async def get_principal(request: Request, rt: Runtime = Depends(get_runtime)) -> Principal:
    """The caller; the key lookup is a database read, so it runs in a worker thread."""
    if not rt.settings.auth_required:
        return ANONYMOUS_DEV
    key = _presented_key(request)
    if key is None:
        raise ApiError(401, "unauthorized", "an API key is required (Authorization: Bearer <key> or X-API-Key)")
    principal = await run_in_threadpool(rt.keys.authenticate, key)
    if principal is None:
        raise ApiError(401, "unauthorized", "unknown or revoked API key")
    return principal


def require(role: Role) -> Callable[..., Principal]:
    """Dependency: the caller's role must be at least ``role``; refused operator/admin attempts are audited."""

    async def dependency(
        request: Request, principal: Principal = Depends(get_principal), rt: Runtime = Depends(get_runtime)
    ) -> Principal:
        request.state.principal = principal  # whose request it is, for the trace it leaves (api.middleware)
        if principal.role < role:
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
