"""The FastAPI application factory."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ragvigil import __version__
from ragvigil.api.deps import get_principal
from ragvigil.api.errors import install_error_handlers
from ragvigil.api.middleware import RequestContextMiddleware
from ragvigil.api.openapi import install_openapi
from ragvigil.api.routes import alerts, chat, health, incidents, kb, openai_compat, traces
from ragvigil.api.serving import DrainGate
from ragvigil.app import Runtime
from ragvigil.config import Settings, load_settings
from ragvigil.config_check import check_settings
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
        if settings.profile.value == "production" and (problems := rt.startup_problems()):
            rt.close()
            raise RuntimeError("refusing to start in production: " + "; ".join(problems))
        app.state.runtime = rt
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
        docs_url="/docs" if settings.api_docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.api_docs else None,
    )
    if runtime is not None:
        app.state.runtime = runtime
    install_error_handlers(app)
    for r in (
        chat.router,
        kb.router,
        openai_compat.router,
        traces.router,
        alerts.router,
        incidents.router,
        health.router,
        health.probes,
    ):
        app.include_router(r)
    install_openapi(app, (get_principal,), NOT_FOUND_IN_BODY)
    app.add_middleware(DrainGate)  # inside the request context: a refused request is still logged and counted
    app.add_middleware(
        RequestContextMiddleware, max_body_bytes=settings.max_body_bytes, expose_errors=settings.expose_errors
    )
    return app


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
