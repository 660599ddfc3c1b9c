"""The OpenAPI document, made to say what the server really does.

FastAPI documents every 422 as its own ``{"detail": [...]}`` and nothing else, while every ragvigil
error is ``{code, message, field?, errors?}`` and routes answer 401/403/404/413/503 too. A client
generated from the spec (or a contract tester) would then reject real answers. This module rewrites
the generated document once: the real error body on every error status a route can give, the
API-key security schemes on the routes that check a key, and text bodies where a route is not JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, Field

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}


class FieldProblem(BaseModel):
    field: str = Field(description="where, dotted (e.g. `messages.3.content`)")
    message: str


class ErrorBody(BaseModel):
    """Every error the API returns."""

    code: str = Field(description="stable machine-readable code, e.g. `validation_error`, `session_not_found`")
    message: str = Field(description="what went wrong, for a person")
    field: str | None = Field(None, description="the offending field (422)")
    errors: list[FieldProblem] | None = Field(None, description="every problem found (422)")


_DESCRIPTIONS = {
    "400": "Bad request (a parameter the server does not support)",
    "401": "Missing, unknown or revoked API key",
    "403": "The key's role is too low for this route",
    "404": "Not found (or not yours)",
    "409": "Conflict with the current state",
    "413": "Request body too large",
    "415": "Unsupported media type",
    "422": "Validation error",
    "429": "Rate limit reached (Retry-After says when to retry)",
    "500": "Internal error",
    "503": "A dependency is unavailable, the service is overloaded, or it is draining",
}


def _calls(dependant: Dependant) -> Iterable[Callable[..., Any]]:
    for dep in dependant.dependencies:
        if dep.call is not None:
            yield dep.call
        yield from _calls(dep)


def error_statuses(dependant: Dependant, checks_key: bool) -> list[str]:
    """The error statuses one route can answer with."""
    statuses = ["500", "503"]
    if checks_key:
        statuses += ["401", "403"]
    if dependant.path_params or dependant.query_params or dependant.body_params:
        statuses.append("422")
    if dependant.path_params:
        statuses.append("404")
    if dependant.body_params:
        statuses += ["400", "413"]  # 400: a body that cannot be parsed at all
    return statuses


def install_openapi(app: FastAPI, key_checks: tuple[Callable[..., Any], ...], extra: dict[str, list[str]]) -> None:
    """Replace ``app.openapi`` with the corrected document (built once, on first request).

    ``key_checks`` are the dependencies that demand a key; ``extra`` adds statuses by route path
    (e.g. 404 for an unknown knowledge base named in the body).
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, routes=app.routes, description=app.description)
        components = doc.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas["ErrorBody"] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas["FieldProblem"] = FieldProblem.model_json_schema()
        schemas["ErrorBody"].pop("$defs", None)
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "an API key, `rv_…`"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        for route in iter_route_contexts(app.routes):
            dependant = getattr(route, "dependant", None)
            path = doc["paths"].get(route.path_format or "")
            if not isinstance(dependant, Dependant) or path is None:
                continue
            checks_key = any(call in key_checks for call in _calls(dependant))
            for method in route.methods or ():
                op = path.get(method.lower())
                if op is None:
                    continue
                responses = op.setdefault("responses", {})
                for status in error_statuses(dependant, checks_key) + extra.get(route.path_format, []):
                    responses[status] = {
                        "description": _DESCRIPTIONS.get(status, "Error"),
                        "content": {"application/json": {"schema": ERROR_REF}},
                    }
                op["responses"] = dict(sorted(responses.items()))
                if checks_key:
                    op["security"] = [{"bearer": []}, {"apiKey": []}]
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
