"""A real ``ragvigil serve`` whose vectors live on a real ``chroma run``.

Ingest and chat end to end on Chroma; a second ragvigil process on the same database searches the
vectors the first one wrote (it embeds no passage itself); and Chroma killed mid-test: chat keeps
answering with BM25 alone (degraded, ``lexical_only``), a document uploaded meanwhile is searchable at
once, and when ``chroma run`` is back the probe returns to hybrid and the filler puts the vectors it
missed into Chroma.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import chromadb
import httpx

from ragvigil.knowledge.chroma_store import collection_name
from tests.realservers import SRC, RagvigilServer, RestartableServer, wait_until

DOCS = {
    "billing.md": "# Billing\n\nRefunds reach your card within five business days after we approve them.\n",
    "account.md": "# Account\n\nTo reset your password, open Settings, choose Security and press Reset password.\n",
    "shipping.md": "# Shipping\n\nParcels ship from Rotterdam; delivery to Germany takes two to three days.\n",
}
LATE = {"returns.md": "# Returns\n\nA returned parcel must carry the return label printed from your orders page.\n"}


def chroma_env(server: RestartableServer, prefix: str, **extra: str) -> dict[str, str]:
    return {
        "RAGVIGIL_VECTOR_STORE__BACKEND": "chroma",
        "RAGVIGIL_VECTOR_STORE__URL": server.url,
        "RAGVIGIL_VECTOR_STORE__TIMEOUT_S": "1",
        "RAGVIGIL_VECTOR_STORE__COLLECTION_PREFIX": prefix,
        "RAGVIGIL_RETRIEVAL__SENTENCE_VECTORS_PER_CHUNK": "0",  # the passages alone: quicker to fill
        **extra,
    }


def upload(base: str, docs: dict[str, str]) -> None:
    files = [("file", (name, text.encode(), "text/markdown")) for name, text in docs.items()]
    r = httpx.post(f"{base}/api/v1/kb/default/documents", files=files, timeout=60)
    assert r.status_code == 201, r.text


def documents(base: str) -> dict[str, dict]:
    r = httpx.get(f"{base}/api/v1/kb/default/documents", timeout=10)
    r.raise_for_status()
    return {d["source"].rsplit("/", 1)[-1]: d for d in r.json()}


def all_ready(base: str, names: list[str]) -> bool:
    docs = documents(base)
    return all(docs.get(n, {}).get("vector_status") == "ready" for n in names)


def chat(base: str, message: str) -> dict:
    r = httpx.post(f"{base}/api/v1/chat", json={"message": message}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def retrieval_mode(base: str) -> str:
    body = httpx.get(f"{base}/health", timeout=30).json()
    return body["checks"]["vector_store"]["details"]["retrieval_mode"]["mode"]


def collection_count(server: RestartableServer, prefix: str) -> int:
    client = chromadb.HttpClient(host="127.0.0.1", port=server.port)
    return client.get_collection(collection_name(prefix, "default"), embedding_function=None).count()


def test_serve_ingests_and_answers_on_chroma_and_another_process_finds_the_vectors(
    chroma: RestartableServer, serve_instance: Callable[..., RagvigilServer], tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    server = serve_instance(env=chroma_env(chroma, prefix))
    upload(server.base, DOCS)
    wait_until(lambda: all_ready(server.base, list(DOCS)), 120, "vectors of the uploaded documents")
    assert collection_count(chroma, prefix) == len(DOCS)  # one chunk each, in Chroma, not in a faiss file
    assert not list((server.data / "index").glob("*.faiss"))

    answer = chat(server.base, "How long until my refund arrives?")
    assert not answer["degraded"], answer
    assert answer["sources"] and answer["sources"][0]["title"] == "Billing"
    hits = httpx.get(
        f"{server.base}/api/v1/kb/default/search", params={"q": "change my login secret", "mode": "vector"}, timeout=30
    ).json()
    assert hits["vector_error"] is None and hits["hits"][0]["title"] == "Account"

    # a second process: its own data dir, the first one's database, the same Chroma; it embeds no passage
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "RAGVIGIL_DATA_DIR": str(tmp_path / "second"),
        "RAGVIGIL_DATABASE_URL": f"sqlite:///{server.data / 'ragvigil.db'}",
        **chroma_env(chroma, prefix),
    }
    out = subprocess.run(
        [sys.executable, "-m", "ragvigil.cli", "search", "--mode", "vector", "--json", "parcel to Berlin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found and found[0]["title"] == "Shipping" and found[0]["vector_score"] > 0.8, found
    assert "vector search unavailable" not in out.stderr


def test_chroma_killed_mid_test_chat_answers_lexically_then_hybrid_and_resync(
    chroma: RestartableServer, serve_instance: Callable[..., RagvigilServer]
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    env = chroma_env(
        chroma, prefix, RAGVIGIL_RETRIEVAL_MODE__TRIP_AFTER="2", RAGVIGIL_RETRIEVAL_MODE__PROBE_INTERVAL_S="0.5"
    )
    server = serve_instance(env=env)
    upload(server.base, DOCS)
    wait_until(lambda: all_ready(server.base, list(DOCS)), 120, "vectors of the uploaded documents")
    assert retrieval_mode(server.base) == "hybrid"

    chroma.stop()  # SIGKILL: the vector server crashes
    try:
        answers = [
            chat(server.base, q)
            for q in ("How many days until refunds reach my card?", "How do I reset my password in Settings?")
        ]
        for a in answers:
            assert a["degraded"] and a["sources"], a  # BM25 still finds the passage
        assert answers[1]["sources"][0]["title"] == "Account"
        assert retrieval_mode(server.base) == "lexical_only"
        third = chat(server.base, "Where do parcels ship from?")
        assert third["sources"][0]["title"] == "Shipping" and third["degraded"]
        upload(server.base, LATE)  # ingested while Chroma is down: BM25 has it at once, its vector waits
        late = chat(server.base, "What label must a returned parcel carry?")
        assert late["sources"][0]["title"] == "Returns"
        assert documents(server.base)["returns.md"]["vector_status"] == "pending"
    finally:
        chroma.start()

    wait_until(lambda: retrieval_mode(server.base) == "hybrid", 60, "the probe to find Chroma back")
    wait_until(lambda: all_ready(server.base, list(LATE)), 120, "the filler to resync the missed vector")
    assert collection_count(chroma, prefix) == len(DOCS) + len(LATE)
    after = chat(server.base, "What label must a returned parcel carry?")
    assert not after["degraded"] and after["sources"][0]["title"] == "Returns"
    hits = httpx.get(
        f"{server.base}/api/v1/kb/default/search", params={"q": "label for sending it back", "mode": "vector"}
    ).json()
    assert hits["vector_error"] is None and hits["hits"][0]["title"] == "Returns"
