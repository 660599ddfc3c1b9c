"""The OpenAI-compatible /v1 routes through the official `openai` SDK against a real server on loopback."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from fastapi.testclient import TestClient
from openai import AsyncOpenAI, OpenAI

from ragvigil.api.openai_usage import estimate_tokens
from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.ops.access import Role
from tests.conftest import LiveServer, local_client, make_settings

QUESTION = "How many API requests per minute are allowed?"
MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": QUESTION}]


@pytest.fixture
def base_url(sample_runtime: Runtime) -> Iterator[str]:
    with LiveServer(create_app(runtime=sample_runtime)) as base:
        yield f"{base}/v1"


@pytest.fixture
def sdk_key(sample_runtime: Runtime) -> str:
    """The SDK always sends a key, and a key is always checked: a client key, as a user would create one."""
    return sample_runtime.keys.create("sdk", Role.client)[1]


@pytest.fixture
def oa(base_url: str, sdk_key: str) -> Iterator[OpenAI]:
    client = OpenAI(base_url=base_url, api_key=sdk_key, max_retries=0)
    yield client
    client.close()


def _usage_ok(usage: object) -> None:
    assert usage is not None
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0  # type: ignore[attr-defined]
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens  # type: ignore[attr-defined]


def test_chat_completion_reports_usage_also_when_streamed(oa: OpenAI) -> None:
    done = oa.chat.completions.create(model="ragvigil", messages=MSGS)
    answer = done.choices[0].message.content
    assert answer and "120" in answer and len(done.choices) == 1
    _usage_ok(done.usage)
    assert done.usage.completion_tokens == estimate_tokens(answer)  # the extractive generator reports none

    chunks = list(
        oa.chat.completions.create(model="ragvigil", messages=MSGS, stream=True, stream_options={"include_usage": True})
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer
    assert chunks[-2].choices[0].finish_reason == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage == done.usage
    assert all(c.usage is None for c in chunks[:-1])
    plain = list(oa.chat.completions.create(model="ragvigil", messages=MSGS, stream=True))
    assert plain[-1].choices[0].finish_reason == "stop" and all(c.usage is None for c in plain)


def test_async_client_chat_and_stream(base_url: str, sdk_key: str) -> None:
    async def run() -> tuple[str, str, int]:
        async with AsyncOpenAI(base_url=base_url, api_key=sdk_key, max_retries=0) as client:
            done = await client.chat.completions.create(model="ragvigil", messages=MSGS)
            stream = await client.chat.completions.create(
                model="ragvigil", messages=MSGS, stream=True, stream_options={"include_usage": True}
            )
            parts, total = [], 0
            async for chunk in stream:
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
                if chunk.usage:
                    total = chunk.usage.total_tokens
            return done.choices[0].message.content or "", "".join(parts), total

    answer, streamed, total = asyncio.run(run())
    assert "120" in answer and streamed == answer and total > 0


def test_models_retrieve(oa: OpenAI) -> None:
    assert [m.id for m in oa.models.list()] == ["ragvigil"]
    assert oa.models.retrieve("ragvigil").id == "ragvigil"
    with pytest.raises(openai.NotFoundError) as exc:
        oa.models.retrieve("gpt-4o")
    assert exc.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
    ],
)
def test_unsupported_chat_parameters_are_a_400_naming_them(oa: OpenAI, extra: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        oa.chat.completions.create(model="ragvigil", messages=MSGS, **extra)
    assert exc.value.status_code == 400 and exc.value.param == param and exc.value.code == "unsupported_parameter"


def test_supported_values_of_those_parameters_are_accepted(oa: OpenAI) -> None:
    done = oa.chat.completions.create(
        model="ragvigil", messages=MSGS, n=1, response_format={"type": "text"}, tool_choice="none", temperature=0
    )
    assert "120" in (done.choices[0].message.content or "")


def test_image_parts_are_refused_not_dropped(oa: OpenAI) -> None:
    content = [{"type": "text", "text": QUESTION}, {"type": "image_url", "image_url": {"url": "data:,"}}]
    with pytest.raises(openai.BadRequestError) as exc:
        oa.chat.completions.create(model="ragvigil", messages=[{"role": "user", "content": content}])
    assert exc.value.param == "messages.0.content.1.type"


def test_text_completions_through_the_sdk(oa: OpenAI) -> None:
    done = oa.completions.create(model="ragvigil", prompt=QUESTION)
    assert done.object == "text_completion" and "120" in done.choices[0].text
    assert done.choices[0].finish_reason == "stop"
    _usage_ok(done.usage)
    assert done.usage.prompt_tokens == estimate_tokens(QUESTION)
    chunks = list(
        oa.completions.create(model="ragvigil", prompt=[QUESTION], stream=True, stream_options={"include_usage": True})
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == done.choices[0].text
    assert chunks[-1].usage == done.usage and chunks[-1].choices == []
    for extra, param in (
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": [QUESTION, QUESTION]}, "prompt"),
        ({"prompt": QUESTION, "echo": True}, "echo"),
        ({"prompt": QUESTION, "n": 3}, "n"),
        ({"prompt": QUESTION, "best_of": 2}, "best_of"),
    ):
        with pytest.raises(openai.BadRequestError) as exc:
            oa.completions.create(model="ragvigil", **extra)
        assert exc.value.param == param, extra
    with pytest.raises(openai.UnprocessableEntityError) as bad:
        oa.completions.create(model="ragvigil", prompt="x" * 5000)
    assert bad.value.param == "prompt"


def test_error_bodies_carry_both_shapes(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json={"messages": MSGS, "n": 2})
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == "unsupported_parameter" and body["field"] == "n" and body["message"]
    assert body["error"] == {
        "message": body["message"],
        "type": "invalid_request_error",
        "param": "n",
        "code": "unsupported_parameter",
    }
    r = client.post("/v1/chat/completions", json={"messages": "nope"})
    assert r.status_code == 422 and r.json()["error"]["param"] == r.json()["field"] == "messages"
    r = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
    # other routes keep the plain shape
    assert "error" not in client.post("/api/v1/chat", json={"message": ""}).json()


def test_auth_errors_are_openai_shaped(sample_data_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "data"
    shutil.copytree(sample_data_dir, d)
    rt = Runtime(make_settings(d, profile="staging"))
    try:
        key = rt.keys.create("client-key", Role.client)[1]
        with LiveServer(create_app(runtime=rt)) as base:
            with pytest.raises(openai.AuthenticationError) as exc:
                OpenAI(base_url=f"{base}/v1", api_key="rv_wrong", max_retries=0).models.list()
            assert exc.value.code == "unauthorized" and exc.value.body["type"] == "authentication_error"
            ok = OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
            assert ok.models.retrieve("ragvigil").id == "ragvigil"
    finally:
        rt.close()


# --- bounds of the whole request, history included --------------------------------------------------


def _chat(client: TestClient, messages: list[dict]) -> tuple[int, dict]:
    r = client.post("/v1/chat/completions", json={"messages": messages})
    return r.status_code, r.json()


def test_a_long_history_message_is_refused_by_its_field(client: TestClient) -> None:
    history = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "y " * 50_000},  # 100 KB: used to cost minutes of CPU
        {"role": "assistant", "content": "ok"},
    ]
    status, body = _chat(client, [*history, {"role": "user", "content": QUESTION}])
    assert status == 422 and body["field"] == "messages.2.content" and body["code"] == "validation_error"
    assert "4000" in body["message"]  # an earlier question has the question's limit
    history[2]["content"] = "fine"
    history[3]["content"] = "z" * 8001  # answers and system prompts may be longer, within bounds
    status, body = _chat(client, [*history, {"role": "user", "content": QUESTION}])
    assert status == 422 and body["field"] == "messages.3.content" and "8000" in body["message"]


def test_the_question_keeps_the_chat_limit(client: TestClient) -> None:
    status, body = _chat(client, [{"role": "system", "content": "s"}, {"role": "user", "content": "q" * 4001}])
    assert status == 422 and body["field"] == "messages.1.content" and "4000" in body["message"]


def test_too_many_messages_and_too_much_text_in_total(sample_data_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "data"
    shutil.copytree(sample_data_dir, d)
    rt = Runtime(make_settings(d, max_request_messages=5, max_context_message_chars=300, max_request_chars=1000))
    try:
        with local_client(create_app(runtime=rt)) as c:
            turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}] * 3
            status, body = _chat(c, [*turns, {"role": "user", "content": QUESTION}])
            assert status == 422 and body["field"] == "messages" and "at most 5 messages" in body["message"]
            big = [{"role": "user", "content": "w " * 150}, {"role": "assistant", "content": "v " * 150}]
            status, body = _chat(
                c, [*big, {"role": "system", "content": "u " * 150}, {"role": "user", "content": "x" * 200}]
            )
            assert status == 422 and body["field"] == "messages" and "1000 characters" in body["message"]
            status, body = _chat(c, [big[0], {"role": "user", "content": QUESTION}])
            assert status == 200 and "120" in body["choices"][0]["message"]["content"]
    finally:
        rt.close()
