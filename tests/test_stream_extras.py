"""The ``stream_extras`` feature: a stream's answer piece by piece; shed, the answer is sent as one delta.

Shedding it really removes work (one event handed over, encoded and written per streamed turn instead
of one per piece) and changes nothing the client keeps: the same text, ``meta`` first, ``done`` last.
"""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from ragvigil.app import Runtime
from ragvigil.ops.admission import FEATURES

QUESTION = {"message": "How do I export my notes?", "user_id": "streamer"}


def _events(client: TestClient) -> list[tuple[str, dict]]:
    r = client.post("/api/v1/chat/stream", json=QUESTION)
    assert r.status_code == 200, r.text
    out = []
    for block in r.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def _openai_chunks(client: TestClient) -> list[str]:
    body = {"model": "ragvigil", "stream": True, "messages": [{"role": "user", "content": QUESTION["message"]}]}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    pieces = []
    for line in r.text.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices", []):
                if choice.get("delta", {}).get("content"):
                    pieces.append(choice["delta"]["content"])
    return pieces


def test_shedding_stream_extras_sends_the_answer_whole_and_restoring_brings_the_pieces_back(
    client: TestClient, sample_runtime: Runtime
) -> None:
    on = _events(client)
    on_deltas = [d["text"] for kind, d in on if kind == "delta"]
    assert len(on_deltas) > 1  # piece by piece
    assert len(_openai_chunks(client)) > 1

    r = client.put("/api/v1/ops/features/stream_extras", json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    shed = _events(client)
    shed_deltas = [d["text"] for kind, d in shed if kind == "delta"]
    assert len(shed_deltas) == 1  # the whole answer in one event
    assert [kind for kind, _ in shed] == ["meta", "delta", "done"]
    assert shed_deltas[0] == "".join(on_deltas) == shed[-1][1]["answer"]  # same text as the stream sent before
    assert len(_openai_chunks(client)) == 1  # the OpenAI-compatible stream too

    assert client.put("/api/v1/ops/features/stream_extras", json={"enabled": True}).status_code == 200
    back = [d["text"] for kind, d in _events(client) if kind == "delta"]
    assert len(back) == len(on_deltas) and "".join(back) == "".join(on_deltas)


def test_every_feature_flag_has_work_behind_it() -> None:
    # analytics_writes was removed: no per-turn analytics work exists for it to switch off
    assert FEATURES == ("contextual_search", "stream_extras")
