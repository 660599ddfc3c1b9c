"""Errors of the ``/v1`` routes in the shape the OpenAI SDKs parse, on top of ragvigil's own.

The openai clients read ``{"error": {"message", "type", "param", "code"}}``: without it ``param`` is
lost and ``BadRequestError.param`` is ``None``. The body keeps ragvigil's ``code``, ``message`` and
``field`` at the top level too, so a caller of both APIs handles one contract, and the status is the
same as on every other route. The app's own exception handlers still decide status and code; this
route class only reshapes what they produce.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from ragvigil.api.errors import ApiError

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_DROPPED_HEADERS = frozenset({"content-length", "content-type"})


def unsupported(param: str, message: str) -> ApiError:
    """A 400 naming the parameter, as OpenAI answers a value it does not support."""
    return ApiError(400, "unsupported_parameter", message, param)


def openai_error_type(status: int) -> str:
    return _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def openai_shaped(response: Response) -> Response:
    """``response`` (one of the app's error bodies) with OpenAI's ``error`` object added."""
    try:
        body = json.loads(bytes(response.body))
    except ValueError:
        return response
    if not isinstance(body, dict) or "code" not in body:
        return response
    body["error"] = {
        "message": body.get("message", ""),
        "type": openai_error_type(response.status_code),
        "param": body.get("field"),
        "code": body["code"],
    }
    headers = {k: v for k, v in response.headers.items() if k.lower() not in _DROPPED_HEADERS}
    return JSONResponse(body, status_code=response.status_code, headers=headers)


def _handler_for(request: Request, exc: Exception) -> Callable[..., object] | None:
    handlers = request.app.exception_handlers
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


class OpenAIErrorRoute(APIRoute):
    """An APIRoute whose errors (validation, auth, the handler's own) come back OpenAI-shaped."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except Exception as exc:
                on_error = _handler_for(request, exc)
                if on_error is None:
                    raise
                result = on_error(request, exc)
                response = await result if inspect.isawaitable(result) else result  # type: ignore[assignment]
            if response.status_code >= 400 and isinstance(response, JSONResponse):
                return openai_shaped(response)
            return response

        return route
