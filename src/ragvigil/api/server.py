"""The FastAPI application factory."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from ragvigil import __version__
from ragvigil.api.admission import OPENAPI_STATUSES, AdmissionMiddleware
from ragvigil.api.deps import get_principal, require
from ragvigil.api.errors import install_error_handlers
from ragvigil.api.fault_scope import FaultScope
from ragvigil.api.middleware import RequestContextMiddleware
from ragvigil.api.openapi import install_openapi
from ragvigil.api.routes import (
    admission,
    alerts,
    analyze,
    backups,
    canary,
    chat,
    diagnosis,
    emotions,
    faults,
    handoffs,
    health,
    incidents,
    kb,
    openai_compat,
    providers,
    reindex,
    remediation,
    safe_mode,
    traces,
)
from ragvigil.api.serving import DrainGate
from ragvigil.app import Runtime
from ragvigil.config import Settings, load_settings
from ragvigil.config_check import check_settings
from ragvigil.ops.access import Role
from ragvigil.ops.admin_key import admin_key_path
from ragvigil.ops.logging import configure_logging

log = logging.getLogger(__name__)

# routes whose body names something that may not exist (a session, a knowledge base): they can answer 404
NOT_FOUND_IN_BODY = {p: ["404"] for p in ("/api/v1/chat", "/api/v1/chat/stream", "/v1/chat/completions")}


def create_app(settings: Settings | None = None, runtime: Runtime | None = None, background: bool = True) -> FastAPI:
    """Build the app. Pass ``runtime`` to share one (tests); otherwise one is built at start-up."""
    settings = settings or (runtime.settings if runtime else load_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        rt = runtime or Runtime(settings)
        announce_admin_key(rt)
        if problems := rt.startup_problems():
            rt.close()
            reasons = "; ".join(f"{p.source}: {p.message}" for p in problems)
            raise RuntimeError(f"refusing to start in {settings.profile.value}: {reasons}")
        app.state.runtime = rt
        rt.draining = False  # a runtime served again (tests share one) is not shutting down
        if owned and background:
            rt.start_background()
        log.info("ragvigil_started", extra={"version": __version__, "profile": settings.profile.value})
        yield
        rt.draining = True  # already set at the first SIGTERM under `ragvigil serve` (api/serving.py)
        if owned:
            rt.close()  # journals the turns a bounded shutdown could not wait for

    app = FastAPI(
        title="ragvigil",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # served by _add_api_docs, behind the same access rule as every other route
        redoc_url=None,
        openapi_url=None,
    )
    if settings.api_docs:
        _add_api_docs(app)
    if runtime is not None:
        app.state.runtime = runtime
    install_error_handlers(app)
    for r in (
        chat.router,
        kb.router,
        openai_compat.router,
        analyze.router,
        traces.router,
        alerts.router,
        incidents.router,
        providers.router,
        admission.router,
        safe_mode.router,
        canary.router,
        faults.router,
        diagnosis.router,
        remediation.router,
        reindex.router,
        handoffs.router,
        emotions.router,
        backups.router,
        health.router,
        health.probes,
    ):
        app.include_router(r)
    extra = {
        p: NOT_FOUND_IN_BODY.get(p, [])
        + OPENAPI_STATUSES.get(p, [])
        + faults.OPENAPI_STATUSES.get(p, [])
        + backups.OPENAPI_STATUSES.get(p, [])
        for p in NOT_FOUND_IN_BODY | OPENAPI_STATUSES | faults.OPENAPI_STATUSES | backups.OPENAPI_STATUSES
    }
    install_openapi(app, (get_principal,), extra)
    app.add_middleware(FaultScope)  # innermost: a delayed request is still logged, counted and drained
    app.add_middleware(AdmissionMiddleware)  # a draining instance refuses before it queues
    app.add_middleware(DrainGate)  # inside the request context: a refused request is still logged and counted
    app.add_middleware(
        RequestContextMiddleware, max_body_bytes=settings.max_body_bytes, expose_errors=settings.expose_errors
    )
    return app


def announce_admin_key(rt: Runtime) -> None:
    """Make the first start's admin key and print it once, on stderr and never into the logs."""
    plain = rt.ensure_admin_key()
    if plain is not None:
        path = admin_key_path(rt.settings.data_dir)
        sys.stderr.write(
            f"ragvigil: created an admin API key (shown once; stored in {path}, readable only by you):\n  {plain}\n"
            f'ragvigil: ops routes need it: curl -H "Authorization: Bearer $(cat {path})" …\n'
        )
        sys.stderr.flush()


def _add_api_docs(app: FastAPI) -> None:
    """/openapi.json and /docs: open on loopback in development, a viewer key otherwise."""
    viewer = [Depends(require(Role.viewer))]

    @app.get("/openapi.json", include_in_schema=False, dependencies=viewer)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=viewer)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - API")


def app_from_env() -> FastAPI:
    """Entry point for ``uvicorn --factory ragvigil.api.server:app_from_env``.

    A broken configuration prints its problems (as ``ragvigil config check`` does) and exits 2,
    instead of a traceback from inside the server's start-up."""
    settings, problems = check_settings()
    for p in problems:
        print(p, file=sys.stderr)
    if settings is None:
        raise SystemExit(2)
    configure_logging(
        settings.log_level, settings.log_dir, settings.log_json, flush_interval=settings.log_flush_interval
    )
    return create_app(settings)
