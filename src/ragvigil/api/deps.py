"""Shared route dependencies: the runtime and the request id."""

from __future__ import annotations

from fastapi import Request

from ragvigil.app import Runtime


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_request_id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")
