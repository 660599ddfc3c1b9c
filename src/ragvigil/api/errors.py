"""Every API error is JSON ``{"code", "message"}`` (plus ``field`` for validation) with the right status."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragvigil.chat.journal import JournalFull
from ragvigil.chat.pipeline import DependencyUnavailable, UnstorableTurn
from ragvigil.chat.sessions import SessionNotFound
from ragvigil.knowledge.catalog import KnowledgeBaseNotFound
from ragvigil.knowledge.ingest import DocumentNotFound
from ragvigil.ops import metrics
from ragvigil.storage.errors import describe, is_data_error

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, details: dict | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.details = details or {}  # extra keys of the body, e.g. every problem of a rejected rule file


def error_body(code: str, message: str, field: str | None = None) -> dict[str, str]:
    body = {"code": code, "message": message}
    if field:
        body["field"] = field
    return body


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path (for the ``Allow`` header of a 405)."""
    path = request.url.path
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= set(route.methods or ())
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({**exc.details, **error_body(exc.code, exc.message, exc.field)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
        field = ".".join(loc) or None
        message = f"{field}: {first['msg']}" if field else str(first["msg"])
        body = error_body("validation_error", message, field)
        body["errors"] = [  # type: ignore[assignment]
            {"field": ".".join(str(p) for p in e.get("loc", ())[1:]), "message": e["msg"]} for e in errors
        ]
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # the router names only the first route of the path; a path may have several
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers)

    @app.exception_handler(SessionNotFound)
    async def _no_session(_: Request, exc: SessionNotFound) -> JSONResponse:
        return JSONResponse(error_body("session_not_found", f"no chat session with id {exc}"), status_code=404)

    @app.exception_handler(KnowledgeBaseNotFound)
    async def _no_kb(_: Request, exc: KnowledgeBaseNotFound) -> JSONResponse:
        return JSONResponse(error_body("kb_not_found", f"no knowledge base named {exc}"), status_code=404)

    @app.exception_handler(DocumentNotFound)
    async def _no_doc(_: Request, exc: DocumentNotFound) -> JSONResponse:
        return JSONResponse(error_body("document_not_found", f"no document with id {exc}"), status_code=404)

    @app.exception_handler(SQLAlchemyError)
    async def _db_down(_: Request, exc: SQLAlchemyError) -> JSONResponse:
        if is_data_error(exc):  # the database is up and refused a value: the caller's to fix, not a 503
            log.warning("database_refused_data", extra={"error": describe(exc)})
            return JSONResponse(
                error_body("unstorable_input", "the database refused a value of this request (e.g. a NUL character)"),
                status_code=400,
            )
        metrics.DATABASE_ERRORS.labels("api").inc()
        log.error("database_error", extra={"error": str(exc)[:300]})
        return JSONResponse(
            error_body("dependency_unavailable", "the database is unavailable; try again shortly"),
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(JournalFull)
    async def _journal_full(_: Request, exc: JournalFull) -> JSONResponse:
        # the database is down and the journal at its bound: this turn was not kept, so say so and when to retry
        return JSONResponse(
            error_body(
                exc.code, "the database is unavailable and the journal of pending turns is full; try again later"
            ),
            status_code=exc.status,
            headers={"Retry-After": str(exc.retry_after)},
        )

    @app.exception_handler(UnstorableTurn)
    async def _unstorable(_: Request, exc: UnstorableTurn) -> JSONResponse:
        # the database is up and said no to these values: the caller's to fix, not a 503 to retry
        return JSONResponse(error_body("unstorable_input", str(exc), "message"), status_code=422)

    @app.exception_handler(DependencyUnavailable)
    async def _dep_down(_: Request, exc: DependencyUnavailable) -> JSONResponse:
        log.error("dependency_unavailable", extra={"error": str(exc)[:300]})
        return JSONResponse(
            error_body("dependency_unavailable", "a required dependency is unavailable; try again shortly"),
            status_code=503,
            headers={"Retry-After": "5"},
        )

    # No handler for Exception here: Starlette runs that one in its outermost layer, outside the request
    # context (no request id on the 500 or its log line) and then re-raises it for the server to log a
    # second time. RequestContextMiddleware calls ``internal_error_body`` instead.


def internal_error_body(exc: Exception, expose: bool) -> bytes:
    """Log an unhandled exception once, with its traceback, and return the JSON body of its 500."""
    log.error("unhandled_error", exc_info=exc)
    message = f"{type(exc).__name__}: {exc}" if expose else "internal error; see the server log"
    return json.dumps(error_body("internal_error", message)).encode()
