"""Text the database cannot store is refused at the API, and a journal entry it refuses never blocks the others."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.chat.pipeline import Turn, UnstorableTurn
from ragvigil.chat.sessions import SessionNotFound, StoredMessage
from ragvigil.ops.metrics import REGISTRY
from ragvigil.storage.text import unstorable_reason
from tests.conftest import local_client, make_settings
from tests.realservers import ServerUnavailable, create_database, postgres_server

FAQ = b"# FAQ\nShipping takes three days."


def _rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("ragvigil_journal_rejected_total", {"reason": reason}) or 0.0


def _start_postgres() -> tuple[object, str]:
    try:
        cm = postgres_server()
        return cm, cm.__enter__()
    except ServerUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not available: {exc}")


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    cm, url = _start_postgres()
    try:
        yield url
    finally:
        cm.__exit__(None, None, None)  # type: ignore[attr-defined]


def test_unstorable_reason_names_nul_and_lone_surrogates() -> None:
    assert unstorable_reason("plain 文本 ✓") is None
    assert "NUL" in (unstorable_reason("a\x00b") or "")
    assert "surrogate" in (unstorable_reason("a\ud800") or "")


@pytest.mark.parametrize("route", ["/api/v1/chat", "/api/v1/chat/stream"])
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"message": "How long does shipping take?\u0000"}, "message"),
        ({"message": "How long does shipping take?", "user_id": "u\u00001"}, "user_id"),
    ],
)
def test_nul_in_chat_text_is_a_422_and_nothing_is_kept(
    client: TestClient, sample_runtime: Runtime, route: str, body: dict, field: str
) -> None:
    resp = client.post(route, json=body)
    assert resp.status_code == 422, resp.text
    err = resp.json()
    assert err["code"] == "validation_error" and err["field"] == field and "NUL" in err["message"]
    assert sample_runtime.journal.pending() == []


def test_a_lone_surrogate_in_the_message_is_a_422(client: TestClient) -> None:
    """A guard, not a regression test: pydantic's JSON parser refuses it already (StorableText covers other inputs)."""
    raw = '{"message": "How long does shipping take? \\ud83d"}'  # half an emoji, as JSON allows
    resp = client.post("/api/v1/chat", content=raw, headers={"Content-Type": "application/json"})
    assert resp.status_code == 422, resp.text
    assert resp.json()["field"] == "message"


def test_an_unreadable_entry_is_set_aside_with_its_reason_and_counted(tmp_path: Path) -> None:
    rt = Runtime(make_settings(tmp_path / "data"))
    try:
        (rt.journal.dir / "20260101T000000000000-broken.json").write_text("{not json", encoding="utf-8")
        now = datetime.now(UTC)
        rt.journal.write("s-ok", "default", None, [StoredMessage("m-ok", "user", "hello", now)])
        before = _rejected("unreadable")
        assert rt.replay_journal() == 1
        assert [m.content for m in rt.sessions.messages("s-ok")] == ["hello"]
        kept = rt.journal.rejected()
        assert [p.name for p in kept] == ["20260101T000000000000-broken.json"]
        assert kept[0].read_text(encoding="utf-8") == "{not json"  # kept as it was
        assert (kept[0].parent / (kept[0].name + ".reason")).read_text().startswith("unreadable:")
        assert _rejected("unreadable") == before + 1
        assert REGISTRY.get_sample_value("ragvigil_journal_rejected_turns") == 1
        assert rt.journal.pending() == [] and rt.replay_journal() == 0
    finally:
        rt.close()


def test_an_entry_no_backend_can_encode_is_set_aside_and_the_next_is_replayed(tmp_path: Path) -> None:
    """SQLite stores a NUL, but no driver encodes a lone surrogate: the same poison, on the default backend."""
    rt = Runtime(make_settings(tmp_path / "data"))
    try:
        old = datetime.now(UTC) - timedelta(minutes=5)
        entry = {
            "session_id": "s-poison",
            "kb": "default",
            "user_id": None,
            "messages": [{"id": "m-poison", "role": "user", "content": "hi \ud800", "created_at": old.isoformat()}],
        }
        poison = rt.journal.dir / f"{old.strftime('%Y%m%dT%H%M%S%f')}-m-poison.json"
        poison.write_text(json.dumps(entry), encoding="ascii")  # as JSON may carry it: escaped
        rt.journal.write("s-ok", "default", None, [StoredMessage("m-ok", "user", "hello", datetime.now(UTC))])
        before = _rejected("data_error")
        assert rt.replay_journal() == 1
        assert [m.content for m in rt.sessions.messages("s-ok")] == ["hello"]
        assert [p.name for p in rt.journal.rejected()] == [poison.name]
        assert _rejected("data_error") == before + 1
        assert rt.journal.pending() == []
    finally:
        rt.close()


@pytest.mark.postgres
def test_a_poison_entry_is_set_aside_and_a_turn_journaled_in_an_outage_still_arrives(tmp_path: Path) -> None:
    """An entry with a NUL (journaled by an older version) first, then a real outage, then recovery."""
    server, url = _start_postgres()
    data = tmp_path / "data"
    rt = Runtime(make_settings(data, database_url=url))
    try:
        rt.ingestor.ingest_bytes("default", "faq.md", FAQ)
        old = datetime.now(UTC) - timedelta(minutes=5)
        poison = [
            StoredMessage("m-poison", "user", "hi\x00there", old),
            StoredMessage("m-poison-a", "assistant", "ok", old),
        ]
        rt.journal.write("s-poison", "default", "u\x00", poison)
        with local_client(create_app(runtime=rt)) as c:
            assert c.post("/api/v1/chat", json={"message": "How long does shipping take?"}).status_code == 200
            server.__exit__(None, None, None)  # type: ignore[attr-defined]
            server = None
            down = c.post("/api/v1/chat", json={"message": "How long does shipping take?"})
            assert down.status_code == 200, down.text
            body = down.json()
            assert any("database unavailable" in r and "journaled" in r for r in body["degraded_reasons"])
        assert len(rt.journal.pending()) == 2
        server, url2 = _start_postgres()  # the database is back
        rt2 = Runtime(make_settings(data, database_url=url2))
        try:
            before = _rejected("data_error")
            assert rt2.replay_journal() == 1
            msgs = rt2.sessions.messages(body["session_id"])
            assert msgs[0].content == "How long does shipping take?"
            assert "three days" in msgs[1].content
            with pytest.raises(SessionNotFound):
                rt2.sessions.messages("s-poison")
            assert rt2.journal.pending() == []
            [kept] = rt2.journal.rejected()
            assert json.loads(kept.read_text(encoding="utf-8"))["messages"][0]["content"] == "hi\x00there"
            reason = (kept.parent / (kept.name + ".reason")).read_text()
            assert reason.startswith("data_error: DataError") and "hi" not in reason  # no user text in it
            assert _rejected("data_error") == before + 1
            assert REGISTRY.get_sample_value("ragvigil_journal_pending_turns") == 0
            assert REGISTRY.get_sample_value("ragvigil_journal_rejected_turns") == 1
            assert rt2.replay_journal() == 0
        finally:
            rt2.close()
    finally:
        rt.close()
        if server is not None:
            server.__exit__(None, None, None)  # type: ignore[attr-defined]


@pytest.mark.postgres
def test_data_the_database_refuses_is_not_an_outage_and_is_not_journaled(pg_url: str, tmp_path: Path) -> None:
    rt = Runtime(make_settings(tmp_path / "data", database_url=create_database(pg_url, "t_" + uuid.uuid4().hex[:12])))
    try:
        rt.ingestor.ingest_bytes("default", "faq.md", FAQ)
        turn = Turn(message="How long does shipping take?\x00", kb="default")  # past the API's check
        with pytest.raises(UnstorableTurn):
            rt.pipeline.run(turn)
        assert rt.journal.pending() == []
        assert turn.persisted_to is None and not any("unavailable" in r for r in turn.degraded_reasons)
    finally:
        rt.close()


@pytest.mark.postgres
def test_a_long_request_id_does_not_fail_the_write(pg_url: str, tmp_path: Path) -> None:
    """A caller's over-long X-Request-ID never reaches the 64-character column (the server names requests)."""
    rt = Runtime(make_settings(tmp_path / "data", database_url=create_database(pg_url, "t_" + uuid.uuid4().hex[:12])))
    try:
        rt.ingestor.ingest_bytes("default", "faq.md", FAQ)
        with local_client(create_app(runtime=rt)) as c:
            resp = c.post(
                "/api/v1/chat", json={"message": "How long does shipping take?"}, headers={"X-Request-ID": "r" * 100}
            )
            assert resp.status_code == 200, resp.text
            assert resp.json()["degraded"] is False
        assert rt.journal.pending() == []
        msgs = rt.sessions.messages(resp.json()["session_id"])
        assert msgs[0].request_id == resp.headers["x-request-id"] != "r" * 64
    finally:
        rt.close()


@pytest.mark.postgres
def test_a_value_the_database_refuses_on_any_route_is_a_4xx_not_database_unavailable(
    pg_url: str, tmp_path: Path
) -> None:
    rt = Runtime(make_settings(tmp_path / "data", database_url=create_database(pg_url, "t_" + uuid.uuid4().hex[:12])))
    try:
        with local_client(create_app(runtime=rt)) as c:
            resp = c.get("/api/v1/sessions/a%00b/messages")
            assert 400 <= resp.status_code < 500, resp.text
            assert resp.json()["code"] != "dependency_unavailable"
            assert c.get("/health/ready").status_code == 200  # and the database is fine
    finally:
        rt.close()
