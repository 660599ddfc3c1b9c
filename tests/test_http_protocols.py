"""A request uvicorn's own parser rejects gets the API's JSON error body, with either HTTP implementation.

Such a request never reaches the app (no exception handler sees it); ``ragvigil serve`` gives uvicorn the
protocol classes of ``api/http_protocols.py``. A real uvicorn on loopback, raw bytes on a socket.
"""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI

from ragvigil.api.http_protocols import CODE, JsonErrorH11Protocol, http_protocol
from tests.conftest import LiveServer
from tests.test_composition import raw_request

BROKEN = (
    b"GET /ping HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n",  # a header without a colon
    b"GET /ping HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # chunk size not hex
)


def _app() -> FastAPI:
    app = FastAPI()
    app.get("/ping")(lambda: {"ok": True})
    return app


@pytest.mark.parametrize("protocol", [http_protocol(), JsonErrorH11Protocol], ids=["default", "h11"])
@pytest.mark.parametrize("request_bytes", BROKEN, ids=["header", "chunked"])
def test_a_request_the_parser_rejects_gets_the_json_error_body(protocol: type, request_bytes: bytes) -> None:
    with LiveServer(_app(), http=protocol) as base:  # type: ignore[arg-type]
        status, headers, body = raw_request(base, b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status == 200 and json.loads(body.split(b"\r\n")[-1] or body) == {"ok": True}
        status, headers, body = raw_request(base, request_bytes)
    assert status == 400, (status, headers, body)
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    error = json.loads(body)
    assert error["code"] == CODE and error["message"]
    assert int(headers["content-length"]) == len(body)
