"""``ragvigil reindex``: a new generation of chunks and vectors is built from the kept originals while the
old one serves, switched in at once when complete; failures and restarts leave the old one serving."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.cli import app as cli_app
from ragvigil.knowledge.reindex import ReindexRunning
from ragvigil.ops import metrics
from ragvigil.ops.access import Role
from ragvigil.storage.models import AuditEntry, Chunk, Document, ReindexJob
from tests.conftest import admin_key, auth, local_client, make_settings

KB = "help"
PARAGRAPHS = [
    "Refunds reach the card the order was paid with within five working days of the return arriving.",
    "The annual membership costs 388 yuan and can be cancelled free of charge before the first of March.",
    "Invoices are sent every month to the billing e-mail address stored in the account settings page.",
    "A parcel lost in transit is replaced at no cost once the carrier has confirmed that it went missing.",
    "Gift cards never expire, cannot be exchanged for cash and may be combined with one promotion code.",
    "Support answers chats between nine in the morning and nine in the evening, every day of the year.",
]
GUIDE = ("# Customer guide\n\n" + "\n\n".join(PARAGRAPHS) + "\n").encode()
FAQ = b"# Shipping FAQ\n\nOrders placed before noon leave the warehouse on the same working day.\n"
QUESTION = "How long does a refund take?"
OLD_CHUNK_CHARS, NEW_CHUNK_CHARS = 2000, 150


def settings(data_dir: Path, chunk_chars: int):  # type: ignore[no-untyped-def]
    return make_settings(
        data_dir, background_embedding=False, retrieval={"chunk_chars": chunk_chars, "chunk_overlap": 20}
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A knowledge base ingested and embedded with large chunks, as by an older release."""
    d = tmp_path / "data"
    rt = Runtime(settings(d, OLD_CHUNK_CHARS))
    try:
        for name, raw in (("faq.md", FAQ), ("guide.md", GUIDE)):
            assert rt.ingestor.ingest_bytes(KB, name, raw).outcome == "created"
        rt.filler.drain()
    finally:
        rt.close()
    return d


@pytest.fixture
def runtime(data_dir: Path) -> Iterator[Runtime]:
    """The same data dir under an upgraded chunker (smaller chunks)."""
    rt = Runtime(settings(data_dir, NEW_CHUNK_CHARS))
    yield rt
    rt.close()


@pytest.fixture
def api(runtime: Runtime) -> Iterator[TestClient]:
    with local_client(create_app(runtime=runtime)) as c:
        yield c


class GatedEmbedder:
    """The reindexer's embedder held at its ``hold_at``-th call until the test releases it (no timing)."""

    def __init__(self, inner, hold_at: int = 1) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.dim, self.hold_at, self.calls = inner, inner.dim, hold_at, 0
        self.entered, self.release = threading.Event(), threading.Event()

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        if self.calls == self.hold_at:
            self.entered.set()
            assert self.release.wait(120), "the test never released the reindex"
        return self.inner.embed_passages(texts)


class FailingEmbedder:
    """The embedder failing from its ``fail_at``-th call on (the engine gone mid-way)."""

    def __init__(self, inner, fail_at: int) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.dim, self.fail_at, self.calls = inner, inner.dim, fail_at, 0

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        if self.calls >= self.fail_at:
            raise RuntimeError("embedding engine crashed")
        return self.inner.embed_passages(texts)


class FailingStore:
    """The vector store failing on its ``fail_at``-th upsert (a full disk, a vector server gone)."""

    def __init__(self, inner, fail_at: int) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.fail_at, self.upserts = inner, fail_at, 0

    def upsert(self, kb: str, ids, vectors) -> None:  # type: ignore[no-untyped-def]
        self.upserts += 1
        if self.upserts == self.fail_at:
            raise OSError("no space left on device")
        self.inner.upsert(kb, ids, vectors)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)


def served_chunks(rt: Runtime) -> dict[int, str]:
    with rt.db.session() as s:
        return dict(s.execute(select(Chunk.id, Chunk.text).where(Chunk.staged_by.is_(None))).all())


def staged_count(rt: Runtime) -> int:
    with rt.db.session() as s:
        return int(s.scalar(select(func.count(Chunk.id)).where(Chunk.staged_by.is_not(None))) or 0)


def ask(api: TestClient) -> dict:
    r = api.post("/api/v1/chat", json={"message": QUESTION, "kb": KB})
    assert r.status_code == 200, r.text
    return r.json()


def test_chat_answers_from_the_old_index_while_a_reindex_runs_then_from_the_new_one(
    api: TestClient, runtime: Runtime
) -> None:
    old = served_chunks(runtime)
    assert max(len(t) for t in old.values()) > 3 * NEW_CHUNK_CHARS  # built with the old chunk size
    gate = GatedEmbedder(runtime.reindexer.embedder, hold_at=3)  # the guide's passages (after the FAQ's two calls)
    runtime.reindexer.embedder = gate
    key = admin_key(runtime)
    before = metrics.REINDEX_DOCUMENTS.labels("rebuilt")._value.get()

    started = api.post(f"/api/v1/kb/{KB}/reindex", headers=auth(key))
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["state"] == "running" and job["kb"] == KB
    assert gate.entered.wait(120)
    try:
        during = api.get(f"/api/v1/kb/{KB}/reindex", headers=auth(key)).json()
        assert (during["state"], during["done"], during["total"]) == ("running", 1, 2)
        assert metrics.REINDEX_RUNNING._value.get() == 1
        assert staged_count(runtime) > 0  # the FAQ's new generation is written, not served
        assert runtime.vectors.ids(KB) == set(old)  # nor its vectors: the served index holds the old ones alone
        answer = ask(api)
        assert answer["sources"] and {s["chunk_id"] for s in answer["sources"]} <= set(old)
        assert "five working days" in answer["answer"]
        hits = api.get(f"/api/v1/kb/{KB}/search", params={"q": QUESTION}).json()["hits"]
        assert hits and {h["chunk_id"] for h in hits} <= set(old)
        again = api.post(f"/api/v1/kb/{KB}/reindex", headers=auth(key))
        assert again.status_code == 409 and again.json()["code"] == "reindex_running"
    finally:
        gate.release.set()
    runtime.reindexer.wait(KB, 120)

    done = api.get(f"/api/v1/kb/{KB}/reindex", headers=auth(key)).json()
    assert (done["state"], done["done"], done["total"], done["errors"]) == ("done", 2, 2, [])
    new = served_chunks(runtime)
    assert not set(new) & set(old) and staged_count(runtime) == 0
    assert len(new) > len(old) and max(len(t) for t in new.values()) <= NEW_CHUNK_CHARS + 60
    with runtime.db.session() as s:
        assert s.scalar(select(Document.chunk_count).where(Document.source == "guide.md")) > 1
    assert runtime.vectors.ids(KB) == set(new)  # the old generation's vectors are gone, the new ones all there
    answer = ask(api)
    assert {s["chunk_id"] for s in answer["sources"]} <= set(new)
    assert "five working days" in answer["answer"]
    vector_hits = api.get(f"/api/v1/kb/{KB}/search", params={"q": QUESTION, "mode": "vector"}).json()["hits"]
    assert vector_hits and {h["chunk_id"] for h in vector_hits} <= set(new)
    assert metrics.REINDEX_DOCUMENTS.labels("rebuilt")._value.get() == before + 2
    assert metrics.REINDEX_RUNNING._value.get() == 0
    with runtime.db.session() as s:
        audits = s.execute(select(AuditEntry.action, AuditEntry.result).where(AuditEntry.action == "kb.reindex"))
        assert sorted(audits.all()) == [("kb.reindex", "ok"), ("kb.reindex", "reindex_running")]


def test_a_failure_mid_way_leaves_the_old_generation_intact(runtime: Runtime) -> None:
    old = served_chunks(runtime)
    old_vectors = runtime.vectors.ids(KB)
    runtime.reindexer.embedder = FailingEmbedder(runtime.reindexer.embedder, fail_at=3)  # after the first document
    job_id = runtime.reindexer.begin(KB, "test")
    with pytest.raises(RuntimeError):
        runtime.reindexer.run(KB, job_id)
    status = runtime.reindexer.status(KB)
    assert (status.state, status.done) == ("failed", 1) and "engine crashed" in status.errors[-1]
    assert served_chunks(runtime) == old and staged_count(runtime) == 0  # the first document's new rows are gone
    assert runtime.vectors.ids(KB) == old_vectors
    assert not any((runtime.settings.data_dir / "reindex").iterdir())  # its staged vectors too
    hits = runtime.retriever.search(KB, QUESTION).hits
    assert hits and hits[0].chunk_id in old and hits[0].vector_score is not None


def test_a_failure_during_the_switch_leaves_the_old_generation_intact(runtime: Runtime) -> None:
    old = served_chunks(runtime)
    old_vectors = runtime.vectors.ids(KB)
    runtime.reindexer.store = FailingStore(runtime.reindexer.store, fail_at=2)  # the second document's vectors
    job_id = runtime.reindexer.begin(KB, "test")
    with pytest.raises(OSError):
        runtime.reindexer.run(KB, job_id)
    status = runtime.reindexer.status(KB)
    assert (status.state, status.done) == ("failed", 2) and "no space left" in status.errors[-1]
    assert served_chunks(runtime) == old and staged_count(runtime) == 0
    assert runtime.vectors.ids(KB) == old_vectors  # the vectors added before the failure went with their rows
    hits = runtime.retriever.search(KB, QUESTION).hits
    assert hits and hits[0].chunk_id in old and hits[0].vector_score is not None


def test_a_document_without_its_original_is_reported_and_skipped_not_fatal(runtime: Runtime) -> None:
    with runtime.db.session() as s:
        faq = s.scalar(select(Document).where(Document.source == "faq.md"))
    runtime.ingestor.originals.delete(faq.original_digest)  # as a document stored before originals were kept
    faq_chunks = {i for i, t in served_chunks(runtime).items() if "noon" in t}
    skipped = metrics.REINDEX_DOCUMENTS.labels("skipped")._value.get()
    status = runtime.reindexer.run(KB, runtime.reindexer.begin(KB, "test"))
    assert (status.state, status.done, status.skipped, status.failed) == ("done", 2, 1, 0)
    assert len(status.errors) == 1 and "faq.md" in status.errors[0] and "no original" in status.errors[0]
    after = served_chunks(runtime)
    assert faq_chunks <= set(after)  # the skipped document keeps serving its chunks
    assert any("Refunds reach" in t and len(t) <= NEW_CHUNK_CHARS + 60 for t in after.values())  # the other rebuilt
    assert metrics.REINDEX_DOCUMENTS.labels("skipped")._value.get() == skipped + 1


def test_a_reindex_stopped_by_a_shutdown_leaves_the_old_generation_and_runs_again(data_dir: Path) -> None:
    rt = Runtime(settings(data_dir, NEW_CHUNK_CHARS))
    old = served_chunks(rt)
    gate = GatedEmbedder(rt.reindexer.embedder, hold_at=3)
    rt.reindexer.embedder = gate
    rt.reindexer.start(KB, "test")
    assert gate.entered.wait(120)
    stopping = threading.Thread(target=rt.close)
    stopping.start()  # close stops the reindexer first: the job ends at its next batch
    gate.release.set()
    stopping.join(120)
    rt = Runtime(settings(data_dir, NEW_CHUNK_CHARS))  # the restart
    try:
        assert rt.reindexer.status(KB).state == "interrupted"
        assert rt.vectors.ids(KB) == set(old)
        assert served_chunks(rt) == old and staged_count(rt) == 0
        status = rt.reindexer.run(KB, rt.reindexer.begin(KB, "test"))
        assert status.state == "done" and not set(served_chunks(rt)) & set(old)
    finally:
        rt.close()


def test_a_job_whose_process_died_is_restartable_and_its_leftovers_removed(runtime: Runtime) -> None:
    """While the runtime runs (a job of a process on another host would be waited for: its heartbeat)."""
    old = served_chunks(runtime)
    with runtime.db.session(write=True) as s:  # what a process killed mid-way leaves: a running job, staged rows
        doc = s.scalar(select(Document).where(Document.source == "faq.md"))
        s.add(
            ReindexJob(
                id="deadjob", kb=KB, state="running", requested_by="x", runner=f"{socket.gethostname()}:999999999"
            )
        )
        s.add(
            Chunk(document_id=doc.id, kb_id=doc.kb_id, ordinal=0, text="half-built", staged_by="deadjob", embedded=True)
        )
    assert runtime.reindexer.status(KB).state == "interrupted"
    job_id = runtime.reindexer.begin(KB, "test")  # not 409: the process that ran it is gone
    status = runtime.reindexer.run(KB, job_id)
    assert status.state == "done" and staged_count(runtime) == 0
    assert "half-built" not in served_chunks(runtime).values() and not set(served_chunks(runtime)) & set(old)
    with runtime.db.session() as s:
        assert s.get(ReindexJob, "deadjob").state == "interrupted"


def test_one_reindex_per_knowledge_base_at_a_time(runtime: Runtime) -> None:
    gate = GatedEmbedder(runtime.reindexer.embedder)
    runtime.reindexer.embedder = gate
    runtime.reindexer.start(KB, "test")
    assert gate.entered.wait(120)
    try:
        with pytest.raises(ReindexRunning):
            runtime.reindexer.begin(KB, "someone else")
    finally:
        gate.release.set()
    runtime.reindexer.wait(KB, 120)
    assert runtime.reindexer.status(KB).state == "done"


def test_the_routes_need_an_admin_and_say_when_nothing_ran(api: TestClient, runtime: Runtime) -> None:
    assert api.post(f"/api/v1/kb/{KB}/reindex").status_code == 401  # never open without a key
    operator = runtime.keys.create("op", Role.operator)[1]
    assert api.post(f"/api/v1/kb/{KB}/reindex", headers=auth(operator)).status_code == 403
    r = api.get(f"/api/v1/kb/{KB}/reindex", headers=auth(admin_key(runtime)))
    assert r.status_code == 404 and r.json()["code"] == "reindex_not_found"
    r = api.post("/api/v1/kb/nosuch/reindex", headers=auth(admin_key(runtime)))
    assert r.status_code == 404 and r.json()["code"] == "kb_not_found"


def test_the_cli_reindexes_offline_and_shows_the_status(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nothing listens on: the command works in its own process
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(data_dir))
    monkeypatch.setenv("RAGVIGIL_PORT", str(port))
    monkeypatch.setenv("RAGVIGIL_RETRIEVAL__CHUNK_CHARS", str(NEW_CHUNK_CHARS))
    monkeypatch.setenv("RAGVIGIL_RETRIEVAL__CHUNK_OVERLAP", "20")
    runner = CliRunner()
    out = runner.invoke(cli_app, ["reindex", "--kb", KB])
    assert out.exit_code == 0, out.output
    assert "done 2/2 documents" in out.output
    status = runner.invoke(cli_app, ["reindex", "--status"])
    assert status.exit_code == 0 and f"{KB}: done 2/2" in status.output
    rt = Runtime(settings(data_dir, NEW_CHUNK_CHARS))
    try:
        assert max(len(t) for t in served_chunks(rt).values()) <= NEW_CHUNK_CHARS + 60
    finally:
        rt.close()


def test_a_restart_recovers_a_job_killed_mid_way_before_anything_else_runs(data_dir: Path) -> None:
    rt = Runtime(settings(data_dir, NEW_CHUNK_CHARS))
    try:
        old = served_chunks(rt)
        with rt.db.session(write=True) as s:  # a process killed mid-way: its job still running, its rows staged
            doc = s.scalar(select(Document).where(Document.source == "faq.md"))
            s.add(
                ReindexJob(
                    id="killed", kb=KB, state="running", requested_by="x", runner=f"{socket.gethostname()}:999999999"
                )
            )
            s.add(Chunk(document_id=doc.id, kb_id=doc.kb_id, ordinal=0, text="half", staged_by="killed", embedded=True))
    finally:
        rt.close()
    rt = Runtime(settings(data_dir, NEW_CHUNK_CHARS))
    try:
        assert staged_count(rt) == 0 and served_chunks(rt) == old
        with rt.db.session() as s:
            assert s.get(ReindexJob, "killed").state == "interrupted"
        assert rt.filler.resync() == 0  # nothing half-built left for the vector filler to embed
    finally:
        rt.close()


def test_the_cli_has_a_running_instance_do_the_work_and_follows_it(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.realservers import ragvigil_server

    rt = Runtime(settings(data_dir, NEW_CHUNK_CHARS))
    try:
        key = admin_key(rt)
        old = served_chunks(rt)
    finally:
        rt.close()
    env = {"RAGVIGIL_RETRIEVAL__CHUNK_CHARS": str(NEW_CHUNK_CHARS), "RAGVIGIL_RETRIEVAL__CHUNK_OVERLAP": "20"}
    with ragvigil_server(data_dir, env=env) as server:
        monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(data_dir))
        out = CliRunner().invoke(cli_app, ["reindex", "--kb", KB, "--url", server.base, "--api-key", key])
        assert out.exit_code == 0, out.output
        assert "done 2/2 documents" in out.output and "in this process" not in out.output
        hits = httpx.get(f"{server.base}/api/v1/kb/{KB}/search", params={"q": QUESTION}, headers=auth(key)).json()
        assert hits["hits"] and not {h["chunk_id"] for h in hits["hits"]} & set(old)  # the server serves the new one
        status = CliRunner().invoke(cli_app, ["reindex", "--status", "--kb", KB])
        assert status.exit_code == 0 and f"{KB}: done 2/2" in status.output


def test_a_background_view_rebuild_that_read_before_the_switch_never_replaces_the_new_view(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = runtime.catalog
    kb_id = catalog.kb_id(KB)
    old_sig, old_records = catalog._signature(kb_id), catalog._load_records(kb_id)  # what that rebuild read
    runtime.reindexer.run(KB, runtime.reindexer.begin(KB, "test"))  # the switch reloads the view
    new_ids = set(served_chunks(runtime))
    assert {r.id for r in catalog.bm25(KB).records} == new_ids
    monkeypatch.setattr(catalog, "_load_records", lambda _kb_id: old_records)
    catalog._rebuild(KB, kb_id, old_sig)  # the background rebuild finishing late
    assert {r.id for r in catalog.bm25(KB).records} == new_ids


def test_a_job_just_begun_is_never_taken_for_a_dead_one(runtime: Runtime) -> None:
    job_id = runtime.reindexer.begin(KB, "first")  # its thread has not started working yet
    other = threading.Thread(target=lambda: errors.append(_begin_error(runtime)))
    errors: list[str] = []
    other.start()
    other.join(60)
    assert errors == ["reindex_running"]
    assert runtime.reindexer.run(KB, job_id).state == "done"


def _begin_error(rt: Runtime) -> str:
    try:
        rt.reindexer.begin(KB, "second")
    except ReindexRunning as exc:
        return exc.code
    return "began"
