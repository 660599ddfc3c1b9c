"""Damaged documents are quarantined: stored and listed, never retrieved or cited until released or replaced.

The damaged document is built the way such exports come about: Chinese text encoded as UTF-8, some
of its bytes lost (replaced by "?"), the rest decoded as Latin-1, so ftfy can repair only part of it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import ftfy.bad_codecs  # noqa: F401  registers "sloppy-windows-1252", how Windows tools decode
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.cli import app as cli_app
from ragvigil.knowledge.loaders import load_bytes
from ragvigil.knowledge.quarantine import QuarantineGauge
from ragvigil.ops import metrics
from ragvigil.providers.extractive import NO_ANSWER
from ragvigil.storage.db import Database
from ragvigil.storage.models import AuditEntry
from tests.conftest import local_client, make_settings, sse_events

KB = "help"
ZH = (
    "# 星河会员说明\n\n星河会员的年费是 388 元，可以在每年 3 月 1 日前免费取消自动续费。退款将在 7 个工作日内到账。\n\n"
    "## 发票\n\n开具发票请在订单页面点击申请发票，电子发票会发送到您的邮箱。\n"
)
QUESTION = "星河会员的年费是多少？"
# what a partial repair leaves behind: a cp1252/Latin-1 rendering of UTF-8 bytes, or a replacement character
MOJIBAKE_MARKS = ("å", "æ", "ä", "è", "ï¼", "\ufffd")


def damaged_bytes(text: str = ZH, every: int = 17) -> bytes:
    """``text`` as UTF-8 with every ``every``-th non-ASCII byte lost, decoded as Latin-1 and saved as UTF-8."""
    raw = bytearray(text.encode("utf-8"))
    for i in range(3, len(raw), every):
        if raw[i] >= 0x80:
            raw[i] = ord("?")
    return bytes(raw).decode("latin-1").encode("utf-8")


def repaired_clean_bytes(text: str = ZH) -> bytes:
    """``text`` decoded as Windows-1252 by some tool: every byte kept, so ftfy repairs it whole."""
    return text.encode("utf-8").decode("sloppy-windows-1252").encode("utf-8")


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = Runtime(make_settings(tmp_path / "data", background_embedding=False, default_kb=KB))  # /v1 asks it
    yield rt
    rt.close()


@pytest.fixture
def api(runtime: Runtime) -> Iterator[TestClient]:
    with local_client(create_app(runtime=runtime)) as c:
        yield c


def upload(api: TestClient, name: str, raw: bytes) -> dict:
    r = api.post(f"/api/v1/kb/{KB}/documents", files=[("file", (name, raw, "text/markdown"))])
    assert r.status_code == 201, r.text
    return r.json()[0]


def ask(api: TestClient, message: str = QUESTION) -> dict:
    r = api.post("/api/v1/chat", json={"message": message, "kb": KB})
    assert r.status_code == 200, r.text
    return r.json()


def gauge(kb: str = KB) -> float:
    return metrics.DOCUMENTS_QUARANTINED.labels(kb)._value.get()


def test_the_damaged_test_document_is_really_damaged_and_the_repaired_one_clean() -> None:
    damaged = load_bytes(damaged_bytes(), "m.md")
    assert damaged.damage is not None and damaged.damage.recovered_share < 0.9, damaged.damage
    assert "星河会员" in damaged.text and any(m in damaged.text for m in MOJIBAKE_MARKS)
    clean = load_bytes(repaired_clean_bytes(), "m.md")
    assert (
        clean.repaired
        and clean.damage is not None
        and clean.damage.lost == 0
        and "星河会员的年费是 388 元" in clean.text
    )


def test_a_damaged_document_is_quarantined_and_never_cited(api: TestClient, runtime: Runtime) -> None:
    res = upload(api, "member.md", damaged_bytes())
    assert res["outcome"] == "created" and res["quarantined"] is True
    assert "recovered" in res["quarantine_reason"]

    doc = api.get(f"/api/v1/kb/{KB}/documents/{res['document_id']}").json()
    assert doc["status"] == "quarantined" and doc["quarantined"] is True and doc["quality"] == "damaged"
    assert "% of its characters recovered" in doc["quarantine_reason"]
    assert any("encoding damage remains" in w for w in doc["warnings"])
    [listed] = api.get(f"/api/v1/kb/{KB}/documents").json()
    assert listed["status"] == "quarantined"

    # a knowledge base holding only it answers "not found", with no source, by BM25 and vectors alike
    answer = ask(api)
    assert answer["sources"] == [] and answer["answer"] == NO_ANSWER["zh"], answer
    assert not any(m in answer["answer"] for m in MOJIBAKE_MARKS)
    for mode in ("bm25", "hybrid"):
        hits = api.get(f"/api/v1/kb/{KB}/search", params={"q": "星河会员 年费", "mode": mode}).json()["hits"]
        assert hits == [], (mode, hits)


def test_the_vector_side_never_returns_a_quarantined_chunk(api: TestClient, runtime: Runtime) -> None:
    bad = upload(api, "member.md", damaged_bytes())
    good = upload(api, "invoice.md", "# 发票\n\n电子发票会在付款后发送到您的邮箱，也可以在订单页面下载。".encode())
    while runtime.filler.run_once():  # every chunk embedded: the quarantined one is in the vector index too
        pass
    hits = runtime.retriever.search(KB, "星河会员的年费和自动续费", k=10, mode="vector").hits
    assert hits and {h.document_id for h in hits} == {good["document_id"]}
    assert bad["document_id"] not in {h.document_id for h in runtime.retriever.search(KB, QUESTION, k=10).hits}


def test_an_operator_release_serves_it_flagged_and_is_audited(api: TestClient, runtime: Runtime) -> None:
    res = upload(api, "member.md", damaged_bytes())
    doc_id = res["document_id"]
    assert gauge() == 1

    r = api.post(f"/api/v1/kb/{KB}/documents/{doc_id}/release")
    assert r.status_code == 200, r.text
    released = r.json()
    assert released["status"] != "quarantined" and released["quarantined"] is False
    assert released["released_by"] == "anonymous" and released["released_at"] is not None
    assert gauge() == 0

    answer = ask(api)
    assert answer["sources"], answer
    src = answer["sources"][0]
    assert src["document_id"] == doc_id and src["quality"] == "released"
    assert any("encoding damage remains" in w for w in src["warnings"])

    again = api.post(f"/api/v1/kb/{KB}/documents/{doc_id}/release")
    assert again.status_code == 409 and again.json()["code"] == "document_not_quarantined"
    unknown = api.post(f"/api/v1/kb/{KB}/documents/nosuchdocument/release")
    assert unknown.status_code == 404 and unknown.json()["code"] == "document_not_found"

    with runtime.db.session() as s:
        entries = list(s.scalars(select(AuditEntry).where(AuditEntry.action == "document.release")))
    assert [(e.result, e.target) for e in entries] == [
        ("ok", f"{KB}/{doc_id}"),
        ("document_not_quarantined", f"{KB}/{doc_id}"),
        ("document_not_found", f"{KB}/nosuchdocument"),
    ]


def test_release_needs_an_operator_key_when_keys_are_required(tmp_path: Path) -> None:
    rt = Runtime(make_settings(tmp_path / "data", background_embedding=False, auth_required=True))
    try:
        with local_client(create_app(runtime=rt)) as c:
            r = c.post(f"/api/v1/kb/{KB}/documents/x/release")
            assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    finally:
        rt.close()


def test_the_cli_releases_a_quarantined_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "docs"
    src.mkdir()
    (src / "member.md").write_bytes(damaged_bytes())
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    ingested = runner.invoke(cli_app, ["ingest", str(src), "--kb", KB, "--defer-vectors"])
    assert ingested.exit_code == 0, ingested.output
    assert "quarantined" in ingested.output
    listed = runner.invoke(cli_app, ["kb", "documents", "--kb", KB, "--quarantined", "--json"])
    assert listed.exit_code == 0, listed.output
    [doc] = json.loads(listed.stdout)
    assert doc["status"] == "quarantined"
    found = runner.invoke(cli_app, ["search", "星河会员 年费", "--kb", KB, "--mode", "bm25", "--json"])
    assert found.exit_code == 1  # nothing searchable while it is quarantined

    released = runner.invoke(cli_app, ["kb", "release", doc["id"], "--kb", KB, "--who", "alice"])
    assert released.exit_code == 0, released.output
    found = runner.invoke(cli_app, ["search", "星河会员 年费", "--kb", KB, "--mode", "bm25", "--json"])
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    assert hits[0]["document_id"] == doc["id"] and hits[0]["quality"] == "released"
    again = runner.invoke(cli_app, ["kb", "release", doc["id"], "--kb", KB])
    assert again.exit_code == 1 and "not quarantined" in again.output
    db = Database(f"sqlite:///{tmp_path / 'data' / 'ragvigil.db'}")
    with db.session() as s:
        entries = list(s.scalars(select(AuditEntry).where(AuditEntry.action == "document.release")))
    db.dispose()
    assert sorted((e.actor, e.result, e.source) for e in entries) == [
        ("alice", "ok", "cli"),
        ("cli", "document_not_quarantined", "cli"),
    ]


def test_a_clean_reupload_replaces_it_and_is_served(api: TestClient) -> None:
    res = upload(api, "member.md", damaged_bytes())
    assert res["quarantined"] and gauge() == 1
    again = upload(api, "member.md", damaged_bytes())
    assert again["outcome"] == "unchanged" and again["quarantined"] is True  # the same bytes stay quarantined

    clean = upload(api, "member.md", ZH.encode("utf-8"))
    assert clean["outcome"] == "updated" and clean["document_id"] == res["document_id"]
    assert clean["quarantined"] is False and gauge() == 0
    doc = api.get(f"/api/v1/kb/{KB}/documents/{res['document_id']}").json()
    assert doc["status"] != "quarantined" and doc["quality"] == "clean" and doc["quarantine_reason"] is None
    answer = ask(api)
    assert answer["sources"] and answer["sources"][0]["quality"] is None and answer["sources"][0]["warnings"] == []
    assert "388" in answer["answer"]


def test_a_repaired_clean_document_is_served_with_its_sources_flagged(api: TestClient) -> None:
    res = upload(api, "member.md", repaired_clean_bytes())
    assert res["quarantined"] is False and any("repaired" in w for w in res["warnings"])
    doc = api.get(f"/api/v1/kb/{KB}/documents/{res['document_id']}").json()
    assert doc["status"] != "quarantined" and doc["quality"] == "repaired"

    answer = ask(api)
    assert "388" in answer["answer"] and not any(m in answer["answer"] for m in MOJIBAKE_MARKS)
    [src, *_] = answer["sources"]
    assert src["quality"] == "repaired" and any("repaired" in w for w in src["warnings"])

    # the same flag on the stream's final event and in the /v1 extras
    with api.stream("POST", "/api/v1/chat/stream", json={"message": QUESTION, "kb": KB}) as r:
        events = sse_events(r.read().decode())
    done = events[-1][1]
    assert events[-1][0] == "done" and done["sources"][0]["quality"] == "repaired"
    v1 = api.post(
        "/v1/chat/completions", json={"model": "ragvigil", "messages": [{"role": "user", "content": QUESTION}]}
    ).json()
    assert v1["ragvigil"]["sources"][0]["quality"] == "repaired"


def test_quarantine_logs_a_warning_without_the_text(
    api: TestClient, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ragvigil.knowledge.quarantine"):
        res = upload(api, "member.md", damaged_bytes())
    [line] = [r for r in caplog.records if r.msg == "document_quarantined"]
    assert line.levelno == logging.WARNING
    assert (line.kb, line.document_id) == (KB, res["document_id"])  # type: ignore[attr-defined]
    assert "recovered" in line.reason  # type: ignore[attr-defined]
    logged = " ".join(str(v) for v in vars(line).values())
    assert "星河" not in logged and "年费" not in logged


def test_the_gauge_counts_per_kb_and_is_set_at_start(api: TestClient, runtime: Runtime, tmp_path: Path) -> None:
    upload(api, "member.md", damaged_bytes())
    upload(api, "other.md", damaged_bytes(ZH.replace("星河", "银河")))
    assert gauge() == 2
    r = api.get("/metrics")
    assert f'ragvigil_documents_quarantined{{kb="{KB}"}} 2.0' in r.text

    metrics.DOCUMENTS_QUARANTINED.labels(KB).set(0)  # what a fresh process holds before it looks
    [job] = [j for j in runtime.background if isinstance(j, QuarantineGauge)]  # started with the instance
    job.start()
    assert gauge() == 2

    [doc, _] = api.get(f"/api/v1/kb/{KB}/documents").json()
    assert (
        api.delete(f"/api/v1/kb/{KB}/documents/{doc['id']}", headers={"X-API-Key": _admin(runtime)}).status_code == 204
    )
    assert gauge() == 1


def _admin(rt: Runtime) -> str:
    from tests.conftest import admin_key

    return admin_key(rt)


def test_a_change_made_elsewhere_updates_the_gauge_on_the_next_index_refresh(api: TestClient, runtime: Runtime) -> None:
    res = upload(api, "member.md", damaged_bytes())
    metrics.DOCUMENTS_QUARANTINED.labels(KB).set(5)  # stale, as in a server after the CLI released a document
    runtime.catalog.invalidate(KB)
    runtime.catalog.bm25(KB)
    assert gauge() == 1
    assert res["quarantined"]


def test_a_slightly_damaged_long_document_is_served_and_flagged(api: TestClient) -> None:
    long_text = (
        ZH + "\n\n" + "\n\n".join(f"## 第 {i} 节\n\n星河会员第 {i} 项权益说明，请在会员中心查看。" for i in range(60))
    )
    raw = long_text.encode("utf-8").decode("sloppy-windows-1252").replace("æ˜Ÿ", "\ufffd", 1)  # one character lost
    res = upload(api, "long.md", raw.encode("utf-8"))
    assert res["quarantined"] is False
    doc = api.get(f"/api/v1/kb/{KB}/documents/{res['document_id']}").json()
    assert doc["status"] != "quarantined" and doc["quality"] == "damaged"
    answer = ask(api)
    assert answer["sources"] and answer["sources"][0]["quality"] == "damaged"
