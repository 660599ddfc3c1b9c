"""What the backup tests share: an instance with something in every store, and what to compare after a restore."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.ops.access import Role
from ragvigil.ops.alerts.incidents import AlertNotice
from tests.conftest import local_client

QUESTIONS = ("How do I export my notes?", "专业版年付多少钱？")


@dataclass
class State:
    """What an instance held when it was backed up."""

    sessions: dict[str, list[str]]  # session id → message texts, in order
    documents: list[tuple[str, str]]  # (id, status)
    vectors: dict[str, int]
    key: str  # a plain operator key
    incidents: list[str]
    chunk_id: int
    chunk_text: str


def populate(rt: Runtime, kb: str = "default") -> State:
    """Two chat sessions of two turns each, an operator key, an incident, on top of the instance's documents."""
    with local_client(create_app(runtime=rt)) as c:
        sessions = {}
        for q in QUESTIONS:
            r = c.post("/api/v1/chat", json={"message": q})
            assert r.status_code == 200, r.text
            sid = r.json()["session_id"]
            r = c.post("/api/v1/chat", json={"message": "And on mobile?", "session_id": sid})
            assert r.status_code == 200, r.text
            sessions[sid] = messages(c, sid)
            assert len(sessions[sid]) == 4
    _, plain = rt.keys.create("backup-test operator", Role.operator)
    notice = AlertNotice(
        {"alertname": "HighErrorRate", "severity": "P2"}, {"summary": "x"}, "firing", datetime.now(UTC)
    )
    rt.incidents.record([notice], "backup-test")
    rt.vectors.flush()
    return State(
        sessions=sessions,
        documents=documents(rt, kb),
        vectors={kb: rt.vectors.count(kb)},
        key=plain,
        incidents=[i["id"] for i in rt.incidents.list()],
        **_one_chunk(rt),
    )


def _one_chunk(rt: Runtime) -> dict:
    from sqlalchemy import select

    from ragvigil.storage.models import Chunk

    with rt.db.session() as s:
        cid, text = s.execute(select(Chunk.id, Chunk.text).where(Chunk.embedded.is_(True)).order_by(Chunk.id)).first()
    return {"chunk_id": cid, "chunk_text": text}


def messages(c: TestClient, sid: str) -> list[str]:
    r = c.get(f"/api/v1/sessions/{sid}/messages")
    assert r.status_code == 200, r.text
    return [m["content"] for m in r.json()]


def documents(rt: Runtime, kb: str = "default") -> list[tuple[str, str]]:
    with local_client(create_app(runtime=rt)) as c:
        r = c.get(f"/api/v1/kb/{kb}/documents")
        assert r.status_code == 200, r.text
        return sorted((d["id"], d["status"]) for d in r.json())


def assert_same_service(rt: Runtime, state: State, kb: str = "default") -> None:
    """The restored instance answers with everything the backed-up one held, vectors without re-embedding."""
    assert rt.ingestor.pending_vectors() == 0  # nothing waits to be embedded again
    assert {kb: rt.vectors.count(kb)} == state.vectors
    hits = rt.retriever.search(kb, state.chunk_text, k=5, mode="vector").hits
    assert state.chunk_id in [h.chunk_id for h in hits]
    assert documents(rt, kb) == state.documents
    with local_client(create_app(runtime=rt)) as c:
        for sid, texts in state.sessions.items():
            assert messages(c, sid) == texts
        r = c.get("/api/v1/ops/incidents", headers={"Authorization": f"Bearer {state.key}"})
        assert r.status_code == 200, r.text  # the old key still authenticates
    assert [i["id"] for i in rt.incidents.list()] == state.incidents


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def rewrite(path: Path, out: Path, change: dict[str, bytes | None], manifest: dict | None = None) -> Path:
    """A copy of the backup with members replaced, added or (None) removed, and manifest fields changed."""
    items = members(path)
    for name, data in change.items():
        if data is None:
            items.pop(name, None)
        else:
            items[name] = data
    if manifest is not None:
        m = json.loads(items["manifest.json"])
        m.update(manifest)
        items["manifest.json"] = json.dumps(m).encode()
    with tarfile.open(out, "w") as tar:
        for name, data in items.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out
