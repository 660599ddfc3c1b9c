"""Hostile uploads on SQLite and a real PostgreSQL: bad names are a 422, bad files a per-file failure."""

from __future__ import annotations

import itertools
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.cli import app as cli_app
from ragvigil.config import IngestSettings
from ragvigil.knowledge.loaders import LoadError, load_bytes
from ragvigil.ops import metrics
from ragvigil.storage.models import Chunk, Document
from tests.conftest import local_client, make_settings
from tests.hostile_pdfs import build_pdf, shared_stream_pdf, text_ops, text_pdf, zip_bomb_pdf
from tests.realservers import create_database

_counter = itertools.count()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    url = f"sqlite:///{tmp_path / 'rv.db'}"
    if request.param == "postgres":
        url = create_database(request.getfixturevalue("pg_server"), f"rv_hostile_{os.getpid()}_{next(_counter)}")
    rt = Runtime(make_settings(tmp_path / "data", database_url=url, background_embedding=False))
    yield rt
    rt.close()


@pytest.fixture
def api(runtime: Runtime) -> Iterator[TestClient]:
    with local_client(create_app(runtime=runtime)) as c:
        yield c


def _multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A form body written by hand: httpx would percent-encode a NUL in a file name, other clients do not."""
    boundary = "rvboundary7d1f"
    body = b""
    for name, raw in files:
        body += f"--{boundary}\r\n".encode()
        body += b'Content-Disposition: form-data; name="file"; filename="' + name.encode() + b'"\r\n'
        body += b"Content-Type: text/markdown\r\n\r\n" + raw + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


def _db_errors() -> float:
    return metrics.DATABASE_ERRORS.labels("api")._value.get()


def _sources(rt: Runtime) -> list[str]:
    with rt.db.session() as s:
        return list(s.scalars(select(Document.source)))


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("bad\x00name.md", "U+0000"),
        ("tab\tname.md", "U+0009"),
        ("x" * 1200 + ".md", "1203 characters; at most 1024"),
    ],
)
def test_a_file_name_the_table_cannot_hold_is_a_422_before_anything_is_stored(
    api: TestClient, runtime: Runtime, name: str, reason: str
) -> None:
    before = _db_errors()
    body, headers = _multipart([("good.md", b"# Good\nkept only if the whole upload is valid"), (name, b"# Bad\nx")])
    r = api.post("/api/v1/kb/names/documents", content=body, headers=headers)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "validation_error" and body["field"] == "file"
    assert "file 2" in body["message"] and reason in body["message"]
    assert _db_errors() == before
    assert _sources(runtime) == []


def test_a_1024_character_name_is_accepted(api: TestClient, runtime: Runtime) -> None:
    name = "d/" * 300 + "x" * 421 + ".md"
    assert len(name) == 1024
    r = api.post("/api/v1/kb/names/documents", files={"file": (name, b"# Long\nname that fits", "text/markdown")})
    assert r.status_code == 201, r.text
    assert r.json()[0]["outcome"] == "created" and _sources(runtime) == [name]


def test_the_ingestor_refuses_a_bad_source_without_touching_the_database(runtime: Runtime) -> None:
    """The CLI passes paths straight in: a path too long for the column is a per-file failure."""
    res = runtime.ingestor.ingest_bytes("cli", "/" + "p" * 1100 + ".md", b"# Deep\npath")
    assert res.outcome == "failed" and "at most 1024" in (res.error or "")
    assert _sources(runtime) == []


def test_control_characters_in_the_text_are_dropped_not_a_database_error(api: TestClient, runtime: Runtime) -> None:
    before = _db_errors()
    raw = b"# Nul\x00 title\nhello\x00world\x07 and a form\x0cfeed"
    r = api.post("/api/v1/kb/ctl/documents", files={"file": ("ctl.md", raw, "text/markdown")})
    assert r.status_code == 201, r.text
    assert r.json()[0]["outcome"] == "created" and _db_errors() == before
    with runtime.db.session() as s:
        text = " ".join(s.scalars(select(Chunk.text)))
        title = s.scalar(select(Document.title))
    assert "helloworld and a form" in text and "feed" in text and title == "Nul title"


def test_a_pdf_bomb_fails_alone_and_the_upload_is_audited(api: TestClient, runtime: Runtime) -> None:
    files = [
        ("file", ("guide.md", b"# Refunds\nRefunds take 14 days.", "text/markdown")),
        ("file", ("bomb.pdf", zip_bomb_pdf(), "application/pdf")),
        ("file", ("shared.pdf", shared_stream_pdf(), "application/pdf")),
        ("file", ("fine.pdf", text_pdf("Invoices are sent monthly", pages=2), "application/pdf")),
    ]
    r = api.post("/api/v1/kb/pdf/documents", files=files)
    assert r.status_code == 201, r.text
    out = {o["source"]: o for o in r.json()}
    assert [out[n]["outcome"] for n in ("guide.md", "bomb.pdf", "shared.pdf", "fine.pdf")] == [
        "created",
        "failed",
        "failed",
        "created",
    ]
    assert "ingest.pdf_max_stream_bytes" in out["bomb.pdf"]["error"]
    assert "ingest.pdf_max_stream_bytes" in out["shared.pdf"]["error"]
    docs = {d["source"]: d for d in api.get("/api/v1/kb/pdf/documents").json()}
    assert docs["bomb.pdf"]["status"] == "failed" and "decompressing" in docs["bomb.pdf"]["error"]
    [entry] = runtime.audit.query(action="document.upload")
    assert entry.result == "failed"
    assert [(f["source"], f["outcome"]) for f in entry.detail["files"]] == [
        ("guide.md", "created"),
        ("bomb.pdf", "failed"),
        ("shared.pdf", "failed"),
        ("fine.pdf", "created"),
    ]
    hits = api.get("/api/v1/kb/pdf/search", params={"q": "invoices monthly", "mode": "bm25"}).json()["hits"]
    assert hits and hits[0]["source"] == "fine.pdf"


def test_one_upload_shares_one_extraction_budget(tmp_path: Path) -> None:
    """Each slow PDF alone is within its own budget; together they would not be, so the upload stops them."""
    slow = text_pdf("Hello", pages=30, lines=30_000)
    limits = IngestSettings(pdf_time_budget_s=60, upload_time_budget_s=1.0)
    rt = Runtime(make_settings(tmp_path / "data", ingest=limits, background_embedding=False))
    rt.tokenizer.tokens("退款 refunds")  # load the dictionaries now, not inside the upload's budget
    files = [("file", ("before.md", b"# Before\ningested", "text/markdown"))]
    files += [("file", (f"slow-{i}.pdf", slow, "application/pdf")) for i in range(3)]
    files.append(("file", ("after.md", b"# After\nreached too late", "text/markdown")))
    try:
        with local_client(create_app(runtime=rt)) as api:
            r = api.post("/api/v1/kb/slow/documents", files=files)
    finally:
        rt.close()
    assert r.status_code == 201, r.text
    out = r.json()
    assert [o["outcome"] for o in out] == ["created", "failed", "failed", "failed", "failed"]
    assert "ingest.upload_time_budget_s" in out[1]["error"] and "ran out of" in out[1]["error"]
    assert all("upload it on its own" in o["error"] for o in out[2:])
    with rt.db.session() as s:  # the files reached too late did nothing wrong: no failed document for them
        assert set(s.scalars(select(Document.source))) == {"before.md", "slow-0.pdf"}


@pytest.mark.parametrize(
    ("raw", "limits", "reason"),
    [
        (zip_bomb_pdf(), IngestSettings(), "pdf_max_stream_bytes"),
        (shared_stream_pdf(), IngestSettings(), "pdf_max_stream_bytes"),
        (text_pdf("Hello", lines=5000), IngestSettings(pdf_max_stream_tokens=2000), "tokens per stream"),
        (text_pdf("Hello", pages=3), IngestSettings(pdf_max_pages=2), "3 pages; at most 2"),
        (text_pdf("Hello", pages=3, lines=400), IngestSettings(max_text_chars=5000), "ingest.max_text_chars"),
        # thirty pages sharing a stream of 60k tokens: minutes of parsing unbounded, stopped by the clock
        (text_pdf("Hello", pages=30, lines=30_000), IngestSettings(pdf_time_budget_s=0.2), "pdf_time_budget_s"),
        (b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF", IngestSettings(), "unreadable PDF"),
    ],
    ids=["bomb", "shared-stream", "tokens", "pages", "chars", "time-budget", "broken"],
)
def test_pdf_extraction_is_bounded_and_says_which_limit(raw: bytes, limits: IngestSettings, reason: str) -> None:
    with pytest.raises(LoadError, match=reason):
        load_bytes(raw, "hostile.pdf", limits)


def test_a_page_over_a_stream_limit_is_skipped_with_a_warning() -> None:
    """A detailed chart on one page must not cost the rest of the document."""
    normal = zlib.compress(text_ops("Refunds take 14 days", 1))
    dense = zlib.compress(text_ops("x", 5000))
    doc = load_bytes(build_pdf([normal, dense, normal]), "report.pdf", IngestSettings(pdf_max_stream_tokens=2000))
    assert doc.text.count("Refunds take 14 days") == 2 and "x" not in doc.text
    assert len(doc.warnings) == 1 and doc.warnings[0].startswith("PDF page 2 skipped: over a safety limit")


def test_html_past_its_byte_bound_is_refused_before_parsing() -> None:
    with pytest.raises(LoadError, match=r"at most 2048 \(ingest.html_max_bytes\)"):
        load_bytes(b"<p>hello world</p>" * 200, "big.html", IngestSettings(html_max_bytes=2048))


def test_text_past_the_character_bound_is_refused() -> None:
    with pytest.raises(LoadError, match="at most 1000"):
        load_bytes(b"# Big\n" + b"a" * 2000, "big.txt", IngestSettings(max_text_chars=1000))


def test_cli_ingest_reports_a_bad_pdf_and_keeps_going(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(tmp_path / "data"))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a-bomb.pdf").write_bytes(zip_bomb_pdf())
    (docs / "b-guide.md").write_text("# Guide\nExport notes from the File menu.", encoding="utf-8")
    res = CliRunner().invoke(cli_app, ["ingest", str(docs), "--kb", "cli", "--defer-vectors"])
    assert res.exit_code == 1, res.output
    assert "1 created" in res.output and "1 failed" in res.output
    assert "a-bomb.pdf" in res.output and "pdf_max_stream_bytes" in res.output
