"""A request uvicorn's own parser rejects gets the API's JSON error body, with either HTTP implementation.

Such a request never reaches the app (no exception handler sees it); ``ragvigil serve`` gives uvicorn the
protocol classes of ``api/http_protocols.py``. A real uvicorn on loopback, raw bytes on a socket.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from fastapi import FastAPI, Request

from ragvigil.api.http_protocols import ARRIVED_KEY, CODE, JsonErrorH11Protocol, http_protocol
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


@pytest.mark.parametrize("protocol", [http_protocol(), JsonErrorH11Protocol], ids=["default", "h11"])
def test_every_request_of_a_kept_alive_connection_is_stamped_with_its_arrival(protocol: type) -> None:
    """Admission counts the time since the stamp as part of a request's wait for a slot."""
    app = FastAPI()
    seen: list[object] = []

    @app.get("/stamp")
    def stamp(request: Request) -> dict[str, bool]:
        seen.append(request.scope.get(ARRIVED_KEY))
        return {"ok": True}

    with LiveServer(app, http=protocol) as base, httpx.Client(base_url=base) as client:  # type: ignore[arg-type]
        before = time.monotonic()  # one connection, kept alive
        for _ in range(3):
            assert client.get("/stamp").status_code == 200
        after = time.monotonic()
    assert len(seen) == 3 and all(isinstance(t, float) and before <= t <= after for t in seen)
    assert seen == sorted(seen) and len(set(seen)) == 3  # each request its own stamp, not the connection's
