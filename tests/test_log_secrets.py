"""Caller-chosen values never reach the logs raw: an API key or an e-mail sent as user id, as X-Request-ID
or as the HTTP method is redacted in application.log and on stdout (through a real uvicorn)."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.ops.logging import configure_logging, reset_logging
from ragvigil.ops.redaction import Redactor
from tests.conftest import LiveServer, make_settings


def _key() -> str:
    return "rv_" + secrets.token_urlsafe(32)  # the format of ops.access.KeyStore.create


def test_ragvigil_key_format_is_redacted_but_its_prefix_is_not() -> None:
    r = Redactor()
    key = _key()
    assert len(key) == 46
    for text in (key, f"user {key} logged in", f"id-{key}", f"令牌{key}。"):
        assert key not in r.redact(text) and "[SECRET]" in r.redact(text)
    assert r.redact(f"revoked {key[:10]}… (ana)") == f"revoked {key[:10]}… (ana)"
    assert r.redact("arv_not_a_key_at_all_but_an_identifier_name") == "arv_not_a_key_at_all_but_an_identifier_name"
    hex_id = "0123456789abcdef0123456789abcdef"
    assert r.redact_id(hex_id) == hex_id and r.redact_id("ana@example.com") == "[EMAIL]"


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[tuple[Runtime, io.StringIO, Path]]:
    rt = Runtime(make_settings(tmp_path / "data", background_embedding=False))
    rt.ingestor.ingest_bytes("default", "faq.md", b"# FAQ\nShipping takes three days.")  # chat needs a kb
    stream = io.StringIO()
    configure_logging("INFO", rt.settings.log_dir, stream=stream, flush_interval=0.05)  # as the server does
    try:
        yield rt, stream, rt.settings.log_dir / "application.log"
    finally:
        reset_logging()
        rt.close()


def test_key_and_email_in_ids_and_method_are_not_logged(logged: tuple[Runtime, io.StringIO, Path]) -> None:
    rt, stream, app_log = logged
    as_user, as_rid, as_method = _key(), _key(), _key()
    email = "ana.lopez@example.com"
    # h11 hands a method it does not know to the app, which must not log it (httptools, uvicorn's default
    # when installed, already refuses such a request with a 400 before the app sees it)
    with LiveServer(create_app(runtime=rt), http="h11") as base:
        chat = httpx.post(f"{base}/api/v1/chat", json={"message": "hello", "user_id": as_user}, timeout=30)
        by_rid = httpx.get(f"{base}/api/v1/kb", headers={"X-Request-ID": as_rid}, timeout=10)
        by_mail = httpx.get(f"{base}/api/v1/kb", headers={"X-Request-ID": email}, timeout=10)
        odd = httpx.request(as_method, f"{base}/api/v1/kb", timeout=10)
    reset_logging()  # writes out what the log writer still holds
    assert chat.status_code == 200 and by_rid.status_code == 200 and by_mail.status_code == 200, chat.text
    assert odd.status_code == 405
    written = {"stdout": stream.getvalue(), "application.log": app_log.read_text(encoding="utf-8")}
    for where, text in written.items():
        assert text.count('"event": "http_request"') >= 4, (where, text)
        for secret in (as_user, as_rid, as_method, email):
            assert secret not in text, (where, secret)
        # the key as user_id is redacted; a key or an email as X-Request-ID is not even kept as the caller's id
        assert "[SECRET]" in text and "_OTHER" in text
