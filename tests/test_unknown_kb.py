"""An unknown knowledge base is one answer everywhere: 404 ``kb_not_found`` naming it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.cli import app as cli_app
from ragvigil.storage.models import ChatSession
from tests.conftest import local_client


def _kb_not_found(resp: httpx.Response, kb: str) -> None:
    assert resp.status_code == 404, resp.text
    body = resp.json()
    body.pop("error", None)  # the /v1 routes add OpenAI's error object to the same body
    assert body == {"code": "kb_not_found", "message": f"no knowledge base named {kb}"}


def test_chat_stream_and_search_say_an_unknown_kb_is_not_found(client: TestClient) -> None:
    _kb_not_found(client.post("/api/v1/chat", json={"message": "How do I export notes?", "kb": "nope"}), "nope")
    _kb_not_found(client.post("/api/v1/chat/stream", json={"message": "How do I export notes?", "kb": "nope"}), "nope")
    _kb_not_found(client.get("/api/v1/kb/nope/search", params={"q": "export"}), "nope")
    _kb_not_found(client.get("/api/v1/kb/nope/documents"), "nope")  # what the documents API always said
    # the existing knowledge base still answers
    assert client.post("/api/v1/chat", json={"message": "How do I export notes?", "kb": "default"}).status_code == 200
    assert client.get("/api/v1/kb/default/search", params={"q": "export"}).json()["hits"]


@pytest.fixture
def empty_client(empty_runtime: Runtime) -> Iterator[TestClient]:
    with local_client(create_app(runtime=empty_runtime)) as c:
        yield c


@pytest.mark.parametrize("stream", [False, True])
def test_openai_route_on_a_missing_default_kb_is_404_before_any_stream(empty_client: TestClient, stream: bool) -> None:
    body = {"messages": [{"role": "user", "content": "How do I export notes?"}], "stream": stream}
    _kb_not_found(empty_client.post("/v1/chat/completions", json=body), "default")
    _kb_not_found(empty_client.post("/api/v1/chat", json={"message": "hi"}), "default")


def test_unknown_kb_leaves_no_session_behind(empty_client: TestClient, empty_runtime: Runtime) -> None:
    _kb_not_found(empty_client.post("/api/v1/chat", json={"message": "hi", "kb": "nope"}), "nope")
    with empty_runtime.db.session() as s:
        assert s.scalar(select(func.count()).select_from(ChatSession)) == 0


@pytest.mark.parametrize("command", [["search", "export"], ["ask", "How do I export notes?"]])
def test_cli_search_and_ask_name_the_unknown_kb(
    command: list[str], sample_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "data"
    shutil.copytree(sample_data_dir, d)
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(d))
    res = CliRunner().invoke(cli_app, [*command, "--kb", "nope"])
    assert res.exit_code == 1, res.output
    assert "no knowledge base named 'nope'" in res.output and "known: default" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_cli_ask_continues_only_its_own_sessions(sample_runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """A session opened with an API key is not the command line's to continue (exit 1, no traceback)."""
    from ragvigil.chat.pipeline import Turn

    keyed = sample_runtime.pipeline.run(Turn(message="How do I export notes?", kb="default", owner="key:k1"))
    own = sample_runtime.pipeline.run(Turn(message="How do I export notes?", kb="default"))
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(sample_runtime.settings.data_dir))
    runner = CliRunner()
    refused = runner.invoke(cli_app, ["ask", "Is there a page limit?", "--session", keyed.session_id])
    assert refused.exit_code == 1 and "no chat session" in refused.output, refused.output
    assert runner.invoke(cli_app, ["ask", "Is there a page limit?", "--session", own.session_id]).exit_code == 0
    assert len(sample_runtime.sessions.messages(keyed.session_id)) == 2
    assert len(sample_runtime.sessions.messages(own.session_id)) == 4
