"""The `openai` generator against a real OpenAI-compatible server (llama.cpp serving SmolLM2)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator

import pytest

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.config import OpenAISettings
from ragvigil.knowledge.retrieval import Hit
from ragvigil.providers.base import GenerationRequest, ProviderRejected, ProviderTimeout, ProviderUnavailable
from ragvigil.providers.openai_compat import OpenAIGenerator, build_messages
from tests.conftest import local_client, make_settings
from tests.realservers import RunningServer, ServerUnavailable, free_port, llama_server

pytestmark = pytest.mark.llm

PASSAGE = Hit(1, "d1", "Refunds", "refunds.md", "Refunds > Yearly", "Yearly plans can be refunded within 14 days.", 1.0)
REQUEST = GenerationRequest("Can I get a refund on a yearly plan?", [PASSAGE], [("user", "hi"), ("assistant", "hello")])


def _fail_if_dead(server: RunningServer) -> None:
    """A crashed server shows up in the client as a bare disconnect: report the crash and the server's log."""
    with contextlib.suppress(subprocess.TimeoutExpired):  # the client sees the drop a moment before the exit
        server.proc.wait(timeout=0.5)
    death = server.death()
    if death:
        pytest.fail(death, pytrace=False)


@pytest.fixture
def llama_url(llama: RunningServer) -> Iterator[str]:
    _fail_if_dead(llama)  # an earlier test crashed it
    yield llama
    _fail_if_dead(llama)


def _gen(url: str, **kw: object) -> OpenAIGenerator:
    kw.setdefault("timeout_s", 120)
    return OpenAIGenerator(OpenAISettings(base_url=url, model="smollm2", max_tokens=24, **kw))  # type: ignore[arg-type]


def test_prompt_carries_rules_passages_history_and_question() -> None:
    msgs = build_messages(REQUEST)
    assert msgs[0]["role"] == "system" and "[1] Refunds > Refunds > Yearly" in msgs[0]["content"]
    assert "within 14 days" in msgs[0]["content"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[-1]["content"] == REQUEST.question


def test_generate_and_stream_against_real_server(llama_url: str) -> None:
    gen = _gen(llama_url)
    gen.check()
    out = gen.generate(REQUEST)
    assert out.text and out.provider == "openai"
    assert out.prompt_tokens and out.prompt_tokens > 20 and out.completion_tokens
    deltas = list(gen.stream(REQUEST))
    assert len(deltas) >= 2 and "".join(deltas).strip()
    gen.close()


def test_error_paths_map_to_typed_errors(llama_url: str) -> None:
    closed = _gen(f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(ProviderUnavailable):
        closed.generate(REQUEST)
    with pytest.raises(ProviderUnavailable):
        list(closed.stream(REQUEST))
    wrong_path = _gen(llama_url.removesuffix("/v1") + "/nope")
    with pytest.raises(ProviderRejected):
        wrong_path.generate(REQUEST)
    slow = OpenAIGenerator(OpenAISettings(base_url=llama_url, model="smollm2", max_tokens=200, timeout_s=0.01))
    with pytest.raises(ProviderTimeout):
        slow.generate(REQUEST)


def test_chat_api_answers_through_the_model(llama_url: str, sample_data_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    d = tmp_path / "data"
    shutil.copytree(sample_data_dir, d)
    rt = Runtime(
        make_settings(
            d,
            generator="openai",
            openai={"base_url": llama_url, "model": "smollm2", "max_tokens": 32, "timeout_s": 120},
        )
    )
    try:
        with local_client(create_app(runtime=rt)) as c:
            body = c.post("/api/v1/chat", json={"message": "How many API requests per minute are allowed?"}).json()
            assert body["degraded"] is False and body["answer"] and body["sources"], body["degraded_reasons"]
            with c.stream("POST", "/api/v1/chat/stream", json={"message": "专业版年付多少钱？"}) as r:
                raw = r.read().decode()
            assert "event: delta" in raw and "event: done" in raw and '"degraded": false' in raw
            msgs = [{"role": "user", "content": "How many API requests per minute are allowed?"}]
            done = c.post("/v1/chat/completions", json={"model": "ragvigil", "messages": msgs}).json()
            usage = done["usage"]  # the model's own counts: its prompt holds the rules and passages too
            assert usage["prompt_tokens"] > 50 and usage["completion_tokens"] > 0, usage
            assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    finally:
        rt.close()


def test_dead_endpoint_falls_back_to_extractive_and_says_degraded(sample_data_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    d = tmp_path / "data"
    shutil.copytree(sample_data_dir, d)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    rt = Runtime(make_settings(d, generator="openai", openai={"base_url": dead, "timeout_s": 2}))
    try:
        with local_client(create_app(runtime=rt)) as c:
            from ragvigil.ops.metrics import REGISTRY

            def failed() -> float:
                labels = {"provider": "openai", "model": "default", "outcome": "unavailable"}
                return REGISTRY.get_sample_value("ragvigil_llm_requests_total", labels) or 0.0

            failed_before = failed()
            body = c.post("/api/v1/chat", json={"message": "专业版年付多少钱？"}).json()
            assert body["degraded"] is True and "¥268" in body["answer"]
            assert failed() == failed_before + 1
            assert any("extractive" in r for r in body["degraded_reasons"])
            ready = c.get("/health/ready")
            assert ready.status_code == 200 and ready.json()["status"] == "degraded"
            assert ready.json()["checks"]["generator"]["status"] == "failing"
    finally:
        rt.close()


def test_a_server_that_dies_is_reported_with_its_log() -> None:
    """What the fixture above reports when llama.cpp crashes under a test (as it did with AMX kernels)."""
    try:
        server = llama_server(n_threads=1)
        with server as url:
            assert url.death() is None
            os.kill(url.proc.pid, signal.SIGSEGV)
            url.proc.wait(timeout=30)
            death = url.death()
    except ServerUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"llama.cpp server not available: {exc}")
    assert death is not None and "killed by SIGSEGV" in death
    assert "llama_cpp.server" in death and "Uvicorn running on" in death  # the tail of the server's own log
