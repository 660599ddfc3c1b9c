"""Failures answered by the request middleware, through a real uvicorn on loopback: the unhandled 500
(request id on the response and on its one log line) and the 413 of a chunked body over the limit."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.ops.logging import configure_logging, reset_logging
from tests.conftest import LiveServer, make_settings

LIMIT = 4096


@pytest.fixture
def small_runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = Runtime(make_settings(tmp_path / "data", max_body_bytes=LIMIT, background_embedding=False))
    yield rt
    rt.close()


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("INFO", None, stream=stream)
    yield stream
    reset_logging()


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


@pytest.mark.parametrize("instrumented", [True, False])
def test_unhandled_error_is_json_with_request_id_and_logged_once(
    small_runtime: Runtime, log_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch, instrumented: bool
) -> None:
    from ragvigil.ops import instrumentation

    monkeypatch.setattr(instrumentation, "enabled", instrumented)
    app = create_app(runtime=small_runtime)

    @app.get("/test/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom in the handler")

    with LiveServer(app) as base:
        r = httpx.get(f"{base}/test/boom", headers={"X-Request-ID": "req-boom-1"}, timeout=10)
        ok = httpx.get(f"{base}/health/live", timeout=10)  # the server is still serving
    assert r.status_code == 500
    rid = r.headers["x-request-id"]  # the server's own id; the caller's is kept as client_request_id
    assert len(rid) == 32 and rid != "req-boom-1"
    assert r.headers["content-type"] == "application/json"
    assert r.json()["code"] == "internal_error" and set(r.json()) == {"code", "message"}
    assert "RuntimeError: kaboom" in r.json()["message"]  # development profile exposes the error
    assert ok.status_code == 200
    text = log_stream.getvalue()
    assert "Exception in ASGI application" not in text, text
    errors = [rec for rec in _lines(log_stream) if rec["level"] == "ERROR"]
    assert [rec["event"] for rec in errors] == ["unhandled_error"], errors
    assert errors[0]["request_id"] == rid
    assert "kaboom in the handler" in errors[0]["exc"]
    assert text.count("Traceback") == 1


def test_production_500_hides_the_exception(tmp_path: Path) -> None:
    rt = Runtime(make_settings(tmp_path / "data", expose_errors=False))
    try:
        app = create_app(runtime=rt)

        @app.get("/test/boom")
        async def boom() -> None:
            raise ValueError("secret detail")

        with LiveServer(app) as base:
            r = httpx.get(f"{base}/test/boom", timeout=10)
        assert r.status_code == 500 and "secret detail" not in r.text
        assert r.json()["message"] == "internal error; see the server log" and r.headers["x-request-id"]
    finally:
        rt.close()


def _chunks(total: int, size: int = 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b"x" * min(size, total - sent)
        sent += size


def test_chunked_chat_body_over_the_limit_is_413(small_runtime: Runtime) -> None:
    with LiveServer(create_app(runtime=small_runtime)) as base:

        def body() -> Iterator[bytes]:
            yield b'{"message": "'
            yield from _chunks(4 * LIMIT)
            yield b'"}'

        r = httpx.post(
            f"{base}/api/v1/chat",
            content=body(),
            headers={"content-type": "application/json", "X-Request-ID": "big-1"},
            timeout=10,
        )
        small = httpx.post(f"{base}/api/v1/chat", content=iter([b'{"message": ""}']), timeout=10)
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "payload_too_large" and len(r.headers["x-request-id"]) == 32
    assert small.status_code == 422  # under the limit, chunked: parsed and validated as usual


def test_chunked_multipart_upload_over_the_limit_is_413(small_runtime: Runtime) -> None:
    boundary = "rvboundary"

    def body() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.md"\r\n'
            "Content-Type: text/markdown\r\n\r\n"
        ).encode()
        yield from _chunks(4 * LIMIT)
        yield f"\r\n--{boundary}--\r\n".encode()

    with LiveServer(create_app(runtime=small_runtime)) as base:
        r = httpx.post(
            f"{base}/api/v1/kb/default/documents",
            content=body(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
            timeout=10,
        )
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "payload_too_large" and r.headers["x-request-id"]
