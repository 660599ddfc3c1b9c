"""The /v1 routes' published schema says what the server accepts, no more and no less.

A client generated from the spec, or a contract tester, sends what the schema allows: each body below
is checked against the schema in ``/openapi.json`` and against the server, and the two must agree.
Values outside the schema keep their named 400/422, as the OpenAI SDKs expect.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

jsonschema_rs = pytest.importorskip("jsonschema_rs")  # comes with schemathesis, a dev dependency

Q = "How many API requests per minute are allowed?"
USER = {"role": "user", "content": Q}

# (route, body, None if accepted, else (status, the field named))
CASES: list[tuple[str, dict[str, Any], tuple[int, str] | None]] = [
    ("chat", {"messages": [{"role": "system", "content": "be brief"}, USER]}, None),
    (
        "chat",
        {
            "messages": [
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": None},
                {"role": "tool", "content": ""},
                {"role": "user", "content": [{"type": "text", "text": Q}, {"type": "text", "text": " "}]},
            ],
            "n": 1,
            "tools": [],
            "tool_choice": "auto",
            "response_format": {"type": "text"},
            "logprobs": False,
            "top_logprobs": 0,
            "user": "u-1",
        },
        None,
    ),
    ("chat", {"messages": [{"role": "tool"}]}, (422, "messages")),  # no question at all
    ("chat", {"messages": [{"role": "user", "content": " "}, USER]}, (422, "messages.0.content")),
    ("chat", {"messages": [{"role": "user"}]}, (422, "messages.0.content")),
    # blank in Python's sense and in JSON Schema's (their white space differs): both say blank
    ("chat", {"messages": [{"role": "user", "content": "\x1f\ufeff\u2003"}]}, (422, "messages.0.content")),
    (
        "chat",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "\x85"}]}]},
        (422, "messages.0.content"),
    ),
    ("chat", {"messages": [{"role": "user", "content": [{"type": "text"}]}]}, (422, "messages.0.content.0.text")),
    ("chat", {"messages": [{"role": "system", "content": "a\x00b"}, USER]}, (422, "messages.0.content")),
    ("chat", {"messages": [USER], "user": "a\x00"}, (422, "user")),
    ("chat", {"messages": [USER], "n": 2}, (400, "n")),
    ("chat", {"messages": [USER], "tools": [{"type": "function", "function": {"name": "f"}}]}, (400, "tools")),
    ("chat", {"messages": [USER], "tool_choice": "required"}, (400, "tool_choice")),
    ("chat", {"messages": [USER], "response_format": {"type": "json_object"}}, (400, "response_format")),
    ("chat", {"messages": [USER], "logprobs": True}, (400, "logprobs")),
    ("chat", {"messages": [USER], "top_logprobs": 2}, (400, "top_logprobs")),
    (
        "chat",
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]},
        (400, "messages.0.content.0.type"),
    ),
    ("chat", {"messages": [USER], "stream": "true"}, (422, "stream")),  # a string is not a boolean
    ("chat", {"messages": [USER], "max_tokens": "5"}, (422, "max_tokens")),
    ("chat", {"messages": [{"role": "user", "content": "q" * 4001}]}, (422, "messages.0.content")),
    ("completions", {"prompt": Q}, None),
    ("completions", {"prompt": [Q], "n": 1, "best_of": 1, "echo": False, "logprobs": 0, "suffix": ""}, None),
    ("completions", {"prompt": " "}, (422, "prompt")),
    ("completions", {"prompt": []}, (422, "prompt")),
    ("completions", {"prompt": ["\ufeff"]}, (422, "prompt")),
    ("completions", {"prompt": "a\x00b"}, (422, "prompt")),
    ("completions", {"prompt": [1, 2, 3]}, (400, "prompt")),
    ("completions", {"prompt": [Q, Q]}, (400, "prompt")),
    ("completions", {"prompt": Q, "echo": True}, (400, "echo")),
    ("completions", {"prompt": Q, "suffix": "after"}, (400, "suffix")),
    ("completions", {"prompt": Q, "logprobs": 1}, (400, "logprobs")),
]
MODELS = {"chat": "OpenAIChatRequest", "completions": "OpenAICompletionRequest"}


def _validator(client: TestClient, route: str) -> Any:
    doc = client.app.openapi()  # type: ignore[attr-defined]
    schema = {"$ref": f"#/components/schemas/{MODELS[route]}", "components": doc["components"]}
    return jsonschema_rs.Draft202012Validator(schema)


@pytest.mark.parametrize(("route", "body", "refused"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_the_schema_allows_exactly_what_the_server_accepts(
    client: TestClient, route: str, body: dict[str, Any], refused: tuple[int, str] | None
) -> None:
    assert _validator(client, route).is_valid(body) == (refused is None)
    r = client.post(f"/v1/{route.replace('chat', 'chat/completions')}", json=body)
    if refused is None:
        assert r.status_code == 200, r.text
    else:
        assert (r.status_code, r.json()["field"]) == refused, r.text


def test_the_per_field_bounds_are_published(client: TestClient) -> None:
    messages = _validator(client, "chat")
    assert not messages.is_valid({"messages": [USER] * 101})  # max_request_messages
    assert messages.is_valid({"messages": [{"role": "system", "content": "s" * 8000}, USER]})
    assert not messages.is_valid({"messages": [{"role": "system", "content": "s" * 8001}, USER]})
    assert not messages.is_valid({"messages": [{"role": "user", "content": [{"type": "text", "text": "q" * 4001}]}]})


# schemathesis itself runs over every route, these included, in tests/test_contract.py
