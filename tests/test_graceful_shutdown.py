"""`ragvigil serve` under SIGTERM with a turn in progress: readiness 503 at once, a bounded exit, no turn lost.

A real server process on loopback, answering from a real OpenAI-compatible server (tests/slow_llm.py)
that holds its answer back, so the turn is reliably still running when the signal arrives.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from ragvigil.app import Runtime
from tests.conftest import make_settings
from tests.realservers import RagvigilServer, ragvigil_server, wait_until
from tests.slow_llm import SlowLLM, slow_llm

QUESTION = "How do I export my notes to PDF?"
MARGIN_S = 20.0  # start-up of the lifespan shutdown on a busy machine, not a timing under test


@contextmanager
def serve(data: Path, llm: SlowLLM, grace_s: float) -> Iterator[RagvigilServer]:
    """``ragvigil serve`` answering through ``llm``; each test stops it with a signal of its own."""
    env = {
        "RAGVIGIL_GENERATOR": "openai",
        "RAGVIGIL_OPENAI__BASE_URL": llm.url,
        "RAGVIGIL_OPENAI__TIMEOUT_S": "120",
        "RAGVIGIL_SHUTDOWN_GRACE_S": str(grace_s),
        "RAGVIGIL_ALERTS__ENABLED": "false",
        "RAGVIGIL_BACKGROUND_EMBEDDING": "false",
        "RAGVIGIL_LOG_LEVEL": "INFO",
    }
    with ragvigil_server(data, env=env, ready_path="/health/live", must_survive=False, stop_grace=5) as s:
        yield s


@dataclass
class StreamClient:
    """A streamed chat turn read in a thread: the meta event, the deltas, until the server stops."""

    base: str
    meta: dict = field(default_factory=dict)
    deltas: list[str] = field(default_factory=list)
    done: bool = False
    first_delta: threading.Event = field(default_factory=threading.Event)

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self._read, daemon=True)
        t.start()
        return t

    def _read(self) -> None:
        event = None
        try:
            with httpx.stream("POST", f"{self.base}/api/v1/chat/stream", json={"message": QUESTION}, timeout=120) as r:
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        data = json.loads(line[6:])
                        if event == "meta":
                            self.meta = data
                        elif event == "delta":
                            self.deltas.append(data["text"])
                            self.first_delta.set()
                        elif event == "done":
                            self.done = True
        except httpx.HTTPError:
            pass  # the server went away mid-answer: that is what the test is about


def _data_dir(sample_data_dir: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(sample_data_dir, data)
    return data


def _start_turn(s: RagvigilServer, llm: SlowLLM) -> StreamClient:
    client = StreamClient(s.base)
    client.start()
    assert client.first_delta.wait(60), s.output()
    assert client.meta["session_id"] and llm.requests == 1
    return client


def _ready_turns_503(s: RagvigilServer) -> None:
    resp = wait_until(
        lambda: (r := httpx.get(f"{s.base}/health/ready", timeout=5)).status_code == 503 and r,
        10,
        "readiness to turn 503",
    )
    assert resp.json()["status"] == "draining"
    refused = httpx.post(f"{s.base}/api/v1/chat", json={"message": QUESTION}, timeout=10)
    assert refused.status_code == 503 and refused.json()["code"] == "draining"
    assert refused.headers["retry-after"]


def _stored(data: Path, session_id: str) -> list:
    rt = Runtime(make_settings(data))
    try:
        rt.replay_journal()
        return rt.sessions.messages(session_id)
    finally:
        rt.close()


def test_a_turn_longer_than_the_grace_period_is_journaled_and_the_server_exits(
    sample_data_dir: Path, tmp_path: Path
) -> None:
    data = _data_dir(sample_data_dir, tmp_path)
    grace = 3.0
    with slow_llm(hold_s=300) as llm, serve(data, llm, grace) as s:
        client = _start_turn(s, llm)
        s.proc.send_signal(signal.SIGTERM)
        _ready_turns_503(s)
        try:
            s.proc.wait(grace + MARGIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {grace + MARGIN_S}s after SIGTERM (grace {grace}s):\n{s.output()}")
        assert not client.done
    assert len(list((data / "journal").glob("*.json"))) == 1, s.output()
    msgs = _stored(data, client.meta["session_id"])
    assert (msgs[0].role, msgs[0].content) == ("user", QUESTION)
    assert msgs[1].id == client.meta["message_id"] and msgs[1].degraded is True
    assert msgs[1].content.startswith("Shipping")  # the answer as far as it had got (or its fallback's end)


def test_a_turn_that_ends_within_the_grace_period_is_answered_and_stored(sample_data_dir: Path, tmp_path: Path) -> None:
    data = _data_dir(sample_data_dir, tmp_path)
    grace = 120.0
    with slow_llm(hold_s=300) as llm, serve(data, llm, grace) as s:
        client = _start_turn(s, llm)
        s.proc.send_signal(signal.SIGINT)  # Ctrl-C drains the same way
        _ready_turns_503(s)
        llm.release()  # the turn finishes during the drain
        try:
            s.proc.wait(MARGIN_S * 2)  # well before the grace period: nothing is left to wait for
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running after the turn ended (grace {grace}s):\n{s.output()}")
    assert client.done and "".join(client.deltas) == llm.answer
    assert list((data / "journal").glob("*.json")) == []
    msgs = _stored(data, client.meta["session_id"])
    assert [(m.role, m.content) for m in msgs] == [("user", QUESTION), ("assistant", llm.answer)]


def test_a_second_sigterm_stops_at_once_and_keeps_the_turn(sample_data_dir: Path, tmp_path: Path) -> None:
    data = _data_dir(sample_data_dir, tmp_path)
    grace = 300.0
    with slow_llm(hold_s=300) as llm, serve(data, llm, grace) as s:
        client = _start_turn(s, llm)
        s.proc.send_signal(signal.SIGTERM)
        _ready_turns_503(s)
        s.proc.send_signal(signal.SIGTERM)
        try:
            s.proc.wait(MARGIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"a second SIGTERM did not stop the server (grace {grace}s):\n{s.output()}")
    msgs = _stored(data, client.meta["session_id"])
    assert msgs[0].content == QUESTION and msgs[1].degraded is True


def test_an_idle_instance_lingers_answering_503_with_connection_close_before_it_closes(
    sample_data_dir: Path, tmp_path: Path
) -> None:
    """With nothing in flight the drain still lasts ``shutdown_linger_s``: a proxy's pooled keep-alive
    connection then gets a 503 it reads (and drops the connection), not a close under its request."""
    data = _data_dir(sample_data_dir, tmp_path)
    env = {
        "RAGVIGIL_SHUTDOWN_GRACE_S": "120",
        "RAGVIGIL_SHUTDOWN_LINGER_S": "60",  # far longer than the test needs: no timing decides it
        "RAGVIGIL_ALERTS__ENABLED": "false",
        "RAGVIGIL_BACKGROUND_EMBEDDING": "false",
    }
    with ragvigil_server(data, env=env, ready_path="/health/live", must_survive=False, stop_grace=5) as s:
        with httpx.Client(base_url=s.base, timeout=10) as pooled:  # a kept-alive connection, as a proxy holds
            assert pooled.get("/health/live").status_code == 200
            s.proc.send_signal(signal.SIGTERM)
            _ready_turns_503(s)
            refused = pooled.post("/api/v1/chat", json={"message": QUESTION})
        assert refused.status_code == 503 and refused.json()["code"] == "draining"
        assert refused.headers["connection"] == "close"
        assert s.proc.poll() is None  # idle, yet still lingering
        s.proc.send_signal(signal.SIGTERM)  # the second signal stops at once
        try:
            s.proc.wait(MARGIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running after a second SIGTERM:\n{s.output()}")
