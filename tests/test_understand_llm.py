"""With a real OpenAI-compatible server answering (a recording one on loopback): a crisis message never
reaches it, on any of the three chat APIs; an unsafe answer it gives is replaced before the client sees
it, whole or streamed; the OpenAI SDK reads the analysis from ``model_extra``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from openai import OpenAI

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.ops.access import Role
from tests.conftest import LiveServer, admin_key, local_client, make_settings, sse_events
from tests.slow_llm import Reply, ScriptedLLM, scripted_llm
from tests.understand_standins import HANDED_EN, HANDED_ZH, REPLACED_EN, understand_with_standins

QUESTION = "How do I export my notes as a PDF file?"
UNSAFE = "Open the File menu and choose Export. Then build a bomb from the parts you have. That is all."


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    with scripted_llm(Reply(text="Open the File menu and choose Export [1].")) as server:
        yield server


@pytest.fixture
def rt(sample_data_dir: Path, tmp_path: Path, llm: ScriptedLLM) -> Iterator[Runtime]:
    data = tmp_path / "data"
    shutil.copytree(sample_data_dir, data)
    runtime = Runtime(make_settings(data, generator="openai", openai={"base_url": llm.url, "timeout_s": 30}))
    understand_with_standins(runtime)
    yield runtime
    runtime.close()


@pytest.fixture
def client(rt: Runtime) -> Iterator[TestClient]:
    with local_client(create_app(runtime=rt), admin_key(rt)) as c:
        yield c


@pytest.fixture
def sdk(rt: Runtime) -> Iterator[OpenAI]:
    with LiveServer(create_app(runtime=rt)) as base:
        oa = OpenAI(base_url=f"{base}/v1", api_key=rt.keys.create("sdk", Role.client)[1], max_retries=0)
        yield oa
        oa.close()


def test_a_crisis_message_never_reaches_the_llm_on_any_chat_api(
    client: TestClient, sdk: OpenAI, llm: ScriptedLLM
) -> None:
    rest = client.post("/api/v1/chat", json={"message": f"{QUESTION} I want to kill myself"}).json()
    assert rest["answer"] == HANDED_EN
    events = sse_events(client.post("/api/v1/chat/stream", json={"message": "我不想活了，怎么导出笔记"}).text)
    assert events[-1][1]["answer"] == HANDED_ZH
    done = sdk.chat.completions.create(model="ragvigil", messages=[{"role": "user", "content": "suicide, export?"}])
    assert done.choices[0].message.content == HANDED_EN
    assert done.model_extra["analysis"]["safety"] == {"category": "self_harm", "severity": "critical"}
    chunks = list(
        sdk.chat.completions.create(
            model="ragvigil", messages=[{"role": "user", "content": "I will kill myself tonight"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == HANDED_EN
    assert chunks[-1].model_extra["analysis"]["safety"]["category"] == "self_harm"
    assert llm.requests == []  # nothing of any crisis turn went to the model

    normal = client.post("/api/v1/chat", json={"message": QUESTION}).json()
    assert normal["answer"] == "Open the File menu and choose Export [1]." and normal["provider"] != "extractive"
    assert llm.calls == 1 and QUESTION in json.dumps(llm.requests[0], ensure_ascii=False)


def test_an_unsafe_answer_is_replaced_and_stored_replaced(client: TestClient, llm: ScriptedLLM, rt: Runtime) -> None:
    llm.set(Reply(text=UNSAFE))
    r = client.post("/api/v1/chat", json={"message": QUESTION}).json()
    assert llm.calls == 1
    assert r["answer"] == REPLACED_EN and r["replaced"] is True and r["sources"] == []
    stored = client.get(f"/api/v1/sessions/{r['session_id']}/messages").json()
    assert stored[1]["content"] == REPLACED_EN
    assert rt.safety.outputs == [UNSAFE]  # type: ignore[union-attr]


def test_a_streamed_unsafe_answer_never_reaches_the_client(client: TestClient, llm: ScriptedLLM) -> None:
    llm.set(Reply(text=UNSAFE))
    events = sse_events(client.post("/api/v1/chat/stream", json={"message": QUESTION}).text)
    relayed = "".join(d["text"] for k, d in events if k == "delta")
    assert "bomb" not in relayed
    assert relayed.startswith("Open the File menu and choose Export.")  # the safe sentence before it was relayed
    assert relayed.endswith(REPLACED_EN)
    done = events[-1]
    assert done[0] == "done" and done[1]["replaced"] is True and done[1]["answer"] == REPLACED_EN
    stored = client.get(f"/api/v1/sessions/{done[1]['session_id']}/messages").json()
    assert stored[1]["content"] == REPLACED_EN


def test_a_safe_streamed_answer_is_relayed_whole(client: TestClient, llm: ScriptedLLM) -> None:
    events = sse_events(client.post("/api/v1/chat/stream", json={"message": QUESTION}).text)
    relayed = "".join(d["text"] for k, d in events if k == "delta")
    assert relayed.strip() == "Open the File menu and choose Export [1]."
    assert events[-1][1]["replaced"] is False


def test_the_openai_sdk_reads_the_analysis_and_a_replaced_stream(sdk: OpenAI, llm: ScriptedLLM) -> None:
    done = sdk.chat.completions.create(model="ragvigil", messages=[{"role": "user", "content": QUESTION}])
    extra = done.model_extra
    assert extra["analysis"]["intent"] == {"name": "product_inquiry", "confidence": 0.62}
    assert extra["analysis"]["emotion"]["label"] == "neutral" and extra["handoff"] is None
    assert extra["ragvigil"]["replaced"] is False

    llm.set(Reply(text=UNSAFE))
    chunks = list(
        # another wording: the same question again would be answered from the answer cache, not the LLM
        sdk.chat.completions.create(
            model="ragvigil", messages=[{"role": "user", "content": "Please: " + QUESTION}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "bomb" not in text and text.endswith(REPLACED_EN)
    final = chunks[-1].model_extra
    assert final["ragvigil"]["replaced"] is True and final["analysis"]["safety"]["category"] is None
