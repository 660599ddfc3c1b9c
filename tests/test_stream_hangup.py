"""A streamed answer whose client hangs up after the first delta is still stored, whole."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.chat.sessions import SessionNotFound
from tests.conftest import LiveServer, make_settings
from tests.realservers import wait_until
from tests.slow_llm import FIRST, slow_llm


def _stored(rt: Runtime, session_id: str) -> list[tuple[str, str]]:
    try:
        return [(m.role, m.content) for m in rt.sessions.messages(session_id)]
    except SessionNotFound:
        return []


def test_a_client_that_hangs_up_mid_stream_leaves_the_whole_turn_stored(sample_data_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(sample_data_dir, data)
    question = "How do I export my notes to PDF?"
    with slow_llm(hold_s=30.0) as llm:
        rt = Runtime(make_settings(data, generator="openai", openai={"base_url": llm.url, "timeout_s": 30}))
        try:
            with LiveServer(create_app(runtime=rt, background=False)) as base:
                meta: dict = {}
                with (
                    httpx.Client(base_url=base, timeout=30) as http,
                    http.stream("POST", "/api/v1/chat/stream", json={"message": question}) as resp,
                ):
                    assert resp.status_code == 200
                    event = None
                    for line in resp.iter_lines():
                        if line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("data: ") and event == "meta":
                            meta = json.loads(line[6:])
                        elif line.startswith("data: ") and event == "delta":
                            assert json.loads(line[6:])["text"] == FIRST
                            break  # the first delta: hang up (the stream's context closes the socket)
                assert meta["session_id"]
                assert _stored(rt, meta["session_id"]) == []  # the answer is still being generated
                llm.release()  # the rest of the answer arrives after the client has gone
                turn = wait_until(lambda: _stored(rt, meta["session_id"]), 30, "the turn to be stored")
                assert turn == [("user", question), ("assistant", llm.answer)]
                msgs = rt.sessions.messages(meta["session_id"])
                assert msgs[1].id == meta["message_id"] and msgs[1].degraded is False
                assert rt.pipeline.in_flight() == [] and rt.journal.pending() == []
                # and the session goes on
                follow = httpx.post(
                    f"{base}/api/v1/chat", json={"message": "and PDF?", "session_id": meta["session_id"]}
                )
                assert follow.status_code == 200, follow.text
        finally:
            rt.close()


def test_an_openai_stream_whose_client_hangs_up_is_stored_whole(sample_data_dir: Path, tmp_path: Path) -> None:
    from sqlalchemy import select

    from ragvigil.storage.models import Message

    data = tmp_path / "data"
    shutil.copytree(sample_data_dir, data)
    body = {"model": "ragvigil", "messages": [{"role": "user", "content": "How do I export my notes?"}], "stream": True}

    def stored_answer(message_id: str) -> str | None:
        with rt.db.session() as s:
            return s.scalar(select(Message.content).where(Message.id == message_id))

    with slow_llm(hold_s=30.0) as llm:
        rt = Runtime(make_settings(data, generator="openai", openai={"base_url": llm.url, "timeout_s": 30}))
        try:
            with LiveServer(create_app(runtime=rt, background=False)) as base:
                with (
                    httpx.Client(base_url=base, timeout=30) as http,
                    http.stream("POST", "/v1/chat/completions", json=body) as resp,
                ):
                    assert resp.status_code == 200
                    for line in resp.iter_lines():
                        if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                            message_id = json.loads(line[6:])["id"].removeprefix("chatcmpl-")
                            break  # the first delta with text: hang up
                llm.release()
                answer = wait_until(lambda: stored_answer(message_id), 30, "the turn to be stored")
                assert answer == llm.answer
        finally:
            rt.close()
